# The weft image: CNI plugin (/weft, installed on nodes by the agent's init container),
# weft-agent and weft-controller (on PATH). Build: docker build -t weft.dev/weft:0.1.0 .
# Machines that cannot pull images use scripts/build-image.sh (Dockerfile.local).

FROM rust:1.85-bookworm AS build
WORKDIR /src
COPY . .
# The CNI plugin is built static: it is copied onto the nodes and runs in their userland.
RUN cargo build --release --locked -p weft-agent -p weft-controller --bins \
 && mkdir /out \
 && cp "$(scripts/build-cni.sh)" target/release/weft-agent target/release/weft-controller /out/

# The agent programs the firewall with `nft` and `iptables` (FORWARD accepts), so the
# runtime image carries nftables and iptables.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man
COPY --from=build /out/weft /weft
COPY --from=build /out/weft-agent /out/weft-controller /usr/local/bin/
RUN ln -s /weft /usr/local/bin/weft
