# lambda-packager service image.
#
#   docker build -t lambda-packager:dev .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 -p 9090:9090 lambda-packager:dev
#
# Two stages: the official Rust image (the toolchain of Cargo.toml's rust-version) builds the
# binary with the command of a local release build, `cargo build --release --locked`
# (dependencies cached in their own layer), and Debian slim runs it as a fixed non-root user.
# The only writable paths are under /tmp (an emptyDir in the Helm chart, --tmpfs above), so the
# root file system can be mounted read-only. scripts/check-deploy lints this file and checks that
# its ports, user, command and environment agree with the chart in helm/lambda-packager.
# docs/deploy.md describes the image.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Only what the release binary is built from (.dockerignore lets nothing else in).
#
# Dependencies first, in a layer of their own: it depends only on Cargo.toml and Cargo.lock, so a
# change under src/ reuses it and compiles nothing but lambda-packager itself. Cargo needs the
# crate's two roots to build its dependencies, so stand-ins take their place (an empty lib.rs, a
# main.rs that panics). Then `cargo clean -p lambda-packager` deletes everything built from the
# stand-ins (the stub binary, its rlib, its fingerprints) and keeps the dependencies' artifacts.
# Why the clean matters: cargo decides freshness by comparing mtimes, and COPY gives the real
# sources the mtimes of the build context (or a fixed SOURCE_DATE_EPOCH), usually older than the
# stub build. Had the stub's artifacts stayed, the build below could find them fresh and the
# image would ship the stub.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && printf 'fn main() { panic!("stub of the Dockerfile dependency layer") }\n' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked \
    && cargo clean --release --locked -p lambda-packager \
    && rm -r src
# The real sources, compiled from scratch (nothing of the stand-ins is left to look fresh), with
# the web pages' templates and assets, which are compiled into the binary. The binary is run once
# as a guard: the stub would panic instead of printing its version.
COPY src ./src
COPY templates ./templates
COPY assets ./assets
RUN cargo build --release --locked \
    && target/release/lambda-packager --version

FROM debian:bookworm-slim
# git: git sources run the git CLI (>= 2.29; bookworm has 2.39). ca-certificates: https remotes
# and S3. The user has a fixed UID/GID so that runAsUser and file ownership are predictable.
# DL3008 (pin apt versions) is ignored on purpose: Debian's archive keeps only the current
# version of a package in a suite, so a pinned version (git 1:2.39.5-0+deb12u2 today) disappears
# with the next security update and breaks the build; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 lambda-packager \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin lambda-packager
COPY --from=build /src/target/release/lambda-packager /usr/local/bin/lambda-packager

# Listen on every interface inside the container; keep everything writable under /tmp. Each
# variable is one configuration key (LAMBDA_PACKAGER_<SECTION>__<KEY>, see README.md) and wins
# over the config file, so the Helm chart sets the same variables to its own values.
ENV LAMBDA_PACKAGER_SERVER__LISTEN=0.0.0.0:8080 \
    LAMBDA_PACKAGER_SERVER__ADMIN_LISTEN=0.0.0.0:9090 \
    LAMBDA_PACKAGER_PACK__TEMP_DIR=/tmp/lambda-packager \
    LAMBDA_PACKAGER_GIT__MIRROR_DIR=/tmp/lambda-packager-git \
    LAMBDA_PACKAGER_STORE__LOCAL__PATH=/tmp/lambda-packager-artifacts

USER 10001:10001
# 8080: the API (also /healthz and /readyz). 9090: admin (/metrics, /healthz, /readyz).
EXPOSE 8080 9090
# No HEALTHCHECK: the image has no HTTP client, and Kubernetes ignores HEALTHCHECK anyway; the
# chart's liveness (/healthz) and readiness (/readyz) probes are the health checks (docs/deploy.md).
ENTRYPOINT ["lambda-packager"]
CMD ["serve"]
