# The inference server as a container: `podman build -t face-attributes .` (or docker build); see docs/deploy.md.
# BASE is any Debian-like image with Node 20 and npm, so that the image can be built from a local base offline.
ARG BASE=node:20-bookworm-slim

FROM ${BASE} AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# Production dependencies only, with install scripts off: onnxruntime-node's would download CUDA (see .npmrc), and
# the packages the server loads (onnxruntime-node's CPU binding, sharp's and esbuild's platform packages) ship prebuilt.
# A build behind a TLS-inspecting proxy passes its CA bundle as the secret "extra_ca" (--secret id=extra_ca,src=FILE).
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra_ca; fi; \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund
# The GPU image: --build-arg ONNXRUNTIME_NODE_INSTALL=cuda12 fetches the CUDA provider, as `npm run setup:cuda` does;
# BASE must then provide CUDA 12 and cuDNN 9 beside Node 20 (docs/deploy.md).
ARG ONNXRUNTIME_NODE_INSTALL=skip
RUN --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/extra_ca; fi; \
    if [ "$ONNXRUNTIME_NODE_INSTALL" != skip ]; then \
      cd node_modules/onnxruntime-node && ONNXRUNTIME_NODE_INSTALL="$ONNXRUNTIME_NODE_INSTALL" node script/install; \
    fi
# onnxruntime-node ships its binding for every OS and CPU; the image keeps its own platform's.
RUN keep="linux/$(node -p process.arch)"; \
    for dir in node_modules/onnxruntime-node/bin/napi-v*/*/*; do case "$dir" in */"$keep") ;; *) rm -rf "$dir" ;; esac; done
COPY . .
RUN npm run build:web
# Training's TensorFlow.js (about 290 MB) is a dependency of the repository, not of the server, which never loads it.
RUN rm -rf node_modules/@tensorflow

FROM ${BASE} AS runtime
# tini is PID 1: it passes SIGTERM to node (which then drains) and reaps what exits.
RUN command -v tini >/dev/null || { apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/*; }
WORKDIR /app
COPY --from=build /app /app
# The one folder the server writes: the decode worker bundled at start-up (node-shared/worker-bundle.ts).
RUN mkdir -p node_modules/.cache && chown 10001:10001 node_modules/.cache
USER 10001:10001
# HOST is explicit: the server's own default may be loopback only, which nothing outside the container can reach.
ENV HOST=0.0.0.0 PORT=3000
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["tini", "--"]
# `npm start` without npm: its prestart (the web demo) was built above; options come from the environment.
CMD ["node", "--import", "tsx", "serve/main.ts"]
