# The runnel:dev image: two statically linked binaries on an empty base, nothing else.
#
# Built by scripts/docker-build.sh, which compiles the binaries with crt-static and stages them, with an empty
# data/ directory, in a build context of their own (target/static/docker-context); do not `docker build` the
# repository root. FROM scratch: no shell, no /tmp, no passwd, no CA store, no resolver configuration. So the
# healthcheck execs the CLI binary directly, the user is numeric, and peers/advertised addresses should be IP
# addresses (the static glibc resolver cannot load NSS modules).
#
# Defaults make `docker run -p 127.0.0.1:9292:9292 runnel:dev` a reachable single-node broker; every setting
# can be overridden by flags after the image name (flag > env, DESIGN.md §7).
FROM scratch

COPY --chown=0:0 runnel-broker runnel /usr/local/bin/
# Copied empty, owned by the broker's user; a named volume mounted here starts as a copy of it (same owner).
COPY --chown=65532:65532 data/ /data/

# RUNNEL_ADVERTISE suits a port published on the host's loopback; a cluster passes --advertise per broker.
ENV RUNNEL_DATA_DIR=/data \
    RUNNEL_LISTEN=0.0.0.0:9292 \
    RUNNEL_ADVERTISE=127.0.0.1:9292 \
    RUNNEL_ADMIN_LISTEN=0.0.0.0:9644

USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9292 9644

HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/runnel", "--brokers", "127.0.0.1:9292", "cluster", "health"]

ENTRYPOINT ["/usr/local/bin/runnel-broker"]
