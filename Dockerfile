# provision in a container: `docker build -t provision .`, then
#   docker run --rm -v "$PWD:/work" -e SUPPORT_SMTP_PASSWORD provision check inboxes.yaml
# Build with the embedded sandbox too: docker build --build-arg EXTRAS=sandbox -t provision .
#
# Two stages: the first builds wheels (pip and the build back end live only there), the
# second installs them from that folder with no index and runs as an unprivileged user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY provision ./provision
ARG EXTRAS=""
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels \
        ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim
ARG EXTRAS=""
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links /wheels \
        "provision${EXTRAS:+[$EXTRAS]}" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin provision
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["provision"]
CMD ["--help"]
