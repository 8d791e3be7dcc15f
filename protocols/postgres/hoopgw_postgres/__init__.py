"""PostgreSQL wire protocol (v3.0) for hoopgw: a sans-io codec (:mod:`.messages`), the SCRAM and
MD5 exchanges (:mod:`.auth`), response tracking (:mod:`.tracking`), and the Twisted edge that
serves clients (:mod:`.frontend`) and logs in to the target (:mod:`.upstream`)."""
