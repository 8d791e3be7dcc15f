// The OpenID provider the console's browser tests sign in through: npm oidc-provider (a
// certified implementation) over HTTPS on loopback, with one confidential client that must
// use PKCE (S256) and test people whose groups come in the ID token's "groups" claim.
//
// usage: node provider.js CONFIG.json
//   CONFIG: {"cert": PEM path, "key": PEM path, "redirect_uri": "...", "client_id": "...",
//            "client_secret": "...", "people": {"alice": ["dba"], ...}}
// Prints "READY https://localhost:PORT" once it listens; the sign-in page takes any password.
import fs from "node:fs";
import https from "node:https";
import Provider from "oidc-provider";

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { privateKey } = await import("node:crypto").then((crypto) =>
  crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }),
);
const signingKey = { ...privateKey.export({ format: "jwk" }), kid: "test-1", use: "sig", alg: "RS256" };

const server = https.createServer({
  cert: fs.readFileSync(config.cert),
  key: fs.readFileSync(config.key),
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `https://localhost:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client_id,
      client_secret: config.client_secret,
      redirect_uris: [config.redirect_uri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  scopes: ["openid", "profile", "email", "groups"],
  claims: { openid: ["sub"], groups: ["groups"], email: ["email", "email_verified"] },
  // The console reads the groups from the ID token, as it does from any token it checks.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const groups = config.people[id];
    if (groups === undefined) {
      return undefined;
    }
    return {
      accountId: id,
      async claims() {
        return { sub: id, groups, email: `${id}@example.test`, email_verified: true };
      },
    };
  },
});
provider.on("server_error", (ctx, error) => console.error("server_error", error));
server.on("request", provider.callback());
console.log(`READY ${issuer}`);
