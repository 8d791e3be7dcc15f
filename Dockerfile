# hoopgw gateway image: wheels built in one stage, installed without build tools in the next.
# The gateway runs as an unprivileged user with a read-only root filesystem; its config is
# mounted at /etc/hoopgw and its store (SQLite, audit journal, SSH host keys) lives in the
# /var/lib/hoopgw volume. docs/deploy.md explains every part.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY hoopgw ./hoopgw
COPY protocols ./protocols
COPY plugins ./plugins
# One wheel per distribution: the gateway, each protocol and each plugin.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . protocols/* plugins/*

FROM python:3.11-slim AS gateway
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/hoopgw --shell /usr/sbin/nologin hoopgw \
    && install -d -o root -g hoopgw -m 0750 /etc/hoopgw \
    && install -d -o hoopgw -g hoopgw -m 0700 /var/lib/hoopgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --find-links /wheels "hoopgw[all]" && rm -rf /wheels
USER hoopgw:hoopgw
WORKDIR /var/lib/hoopgw
VOLUME ["/var/lib/hoopgw"]
# The admin API (health, metrics, reviews) and a first database listener; the config decides.
EXPOSE 8080 15432
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hoopgw"]
CMD ["run", "-c", "/etc/hoopgw/hoopgw.toml"]
