# syntax=docker/dockerfile:1
# The controller image: distroless cc, non-root, listening where the chart expects.
# Build: docker build -t portcullis .   (.github/workflows/release.yml publishes it)
# Base images are pinned: the Rust release exactly, the runtime by digest.

FROM rust:1.95.0-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS plan
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
COPY src src
COPY examples examples
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
# Dependencies alone: this layer is reused until Cargo.toml or Cargo.lock change.
RUN cargo chef cook --release --locked --bin portcullis --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin portcullis && strip target/release/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
# In a container the admin listener must leave loopback for the kubelet's probes; the
# chart passes the same addresses as flags.
ENV PORTCULLIS_HTTP=0.0.0.0:8080 PORTCULLIS_HTTPS=0.0.0.0:8443 PORTCULLIS_ADMIN=0.0.0.0:9090
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run"]
