# The test identity provider (tests/idp, npm oidc-provider) as an image for kind.
FROM node:22.12.0-bookworm-slim
WORKDIR /idp
COPY tests/idp/package.json tests/idp/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tests/idp/*.mjs ./
USER node
ENTRYPOINT ["node", "server.mjs"]
