# knit's one image: knit-operator, knitd (+ knit-wg), knit, knit-cni, and later
# knit-relay. Built here without a registry by scripts/image
# (buildah bud --pull=never on a local debian:bookworm made with debootstrap),
# or anywhere else with `docker build .`.

# --- build: the same build packages as scripts/install-deps --------------
FROM debian:bookworm AS build
COPY scripts/install-deps /tmp/install-deps
# The "# build" group of install-deps' PKGS list, so the two never drift.
RUN set -eux; \
    pkgs=$(awk '/^\t# build$/{f=1; next} f && /^\t# /{exit} f' /tmp/install-deps); \
    test -n "$pkgs"; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . /src
RUN set -eux; \
    rm -rf build; \
    cmake --preset default -DKNIT_TESTS=OFF; \
    cmake --build --preset default -j "$(nproc)"; \
    cmake --install build/default --prefix /out --strip; \
    ls -l /out/bin
# The runtime stage installs exactly the Debian packages that own the
# shared libraries the binaries link.
RUN set -eux; \
    for lib in $(ldd /out/bin/* 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u); do \
        real=$(readlink -f "$lib"); \
        dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || \
            dpkg -S "/usr$lib" 2>/dev/null || dpkg -S "${lib#/usr}" 2>/dev/null || \
            { echo "no package owns $lib" >&2; exit 1; }; \
    done | cut -d: -f1 | sort -u >/out/runtime-packages; \
    cat /out/runtime-packages

# --- runtime --------------------------------------------------------------
FROM debian:bookworm
COPY --from=build /out/runtime-packages /tmp/runtime-packages
# iproute2 and nftables: the agent's data plane is inspectable from inside
# its pod (ip, nft), as an operator would expect.
RUN set -eux; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $(cat /tmp/runtime-packages) ca-certificates iproute2 nftables; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/runtime-packages; \
    groupadd --system --gid 65532 knit; \
    useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --shell /usr/sbin/nologin knit
# /out/bin holds every installed binary: knitd, knit, knit-operator and
# knit-cni (which the DaemonSet's init container, as root, copies to the
# node with "knit-cni install").
COPY --from=build /out/bin/ /usr/local/bin/
# The operator needs no privilege; knitd (NET_ADMIN, /dev/net/tun) is run as
# root by its DaemonSet.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/knit-operator"]
