# The controller image: a static-free, minimal runtime (distroless cc, non-root).
# Build: docker build -t portcullis .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY vendor vendor
COPY src src
COPY examples examples
RUN cargo build --release --locked --bin portcullis && strip target/release/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
USER 65532:65532
EXPOSE 8080 8443 9090
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run"]
