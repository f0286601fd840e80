// A real, certified OpenID provider for the tests: oidc-provider with one confidential
// client, development login forms (any password), and keys made at start.
// Prints {"issuer": "..."} on stdout once it listens on 127.0.0.1 (port from argv or 0).
import { Provider, errors } from 'oidc-provider';
import { generateKeyPair, exportJWK, createLocalJWKSet, jwtVerify } from 'jose';
import { readFileSync } from 'node:fs';

const port = Number(process.argv[2] ?? 0);
const redirectUris = (process.env.IDP_REDIRECT_URIS ?? 'https://app.example.com/oauth2/idpresponse').split(',');

async function signingKeys() {
  const keys = [];
  for (const [alg, kid] of [['RS256', 'rs-1'], ['ES256', 'es-1']]) {
    const { privateKey } = await generateKeyPair(alg, { extractable: true });
    keys.push({ ...(await exportJWK(privateKey)), alg, kid, use: 'sig' });
  }
  return { keys };
}

// In a cluster (tests/kind): IDP_HOST to listen on, IDP_ISSUER as browsers and
// Portcullis reach it, IDP_TLS_CERT/IDP_TLS_KEY (PEM files) to serve HTTPS.
const tls = process.env.IDP_TLS_CERT
  ? { cert: readFileSync(process.env.IDP_TLS_CERT), key: readFileSync(process.env.IDP_TLS_KEY) }
  : null;
const server = tls
  ? (await import('node:https')).createServer(tls)
  : (await import('node:http')).createServer();
await new Promise((resolve) => server.listen(port, process.env.IDP_HOST ?? '127.0.0.1', resolve));
const issuer = process.env.IDP_ISSUER ?? `http://127.0.0.1:${server.address().port}`;

// The API that bearer tokens are issued for (client_credentials with
// resource=IDP_API_AUDIENCE gives a JWT access token with that aud).
const apiAudience = process.env.IDP_API_AUDIENCE ?? 'https://api.example.com';
// Tokens for this client are issued with the clock an hour slow: expired on arrival.
const slowClockClient = 'portcullis-slow-clock';

// IDP_FRONTCHANNEL_URI: OpenID Connect Front-Channel Logout 1.0, which oidc-provider
// no longer ships: after a confirmed logout the browser gets a page that loads this
// URI with iss and sid in an iframe, then goes on to the post-logout redirect.
const frontchannelUri = process.env.IDP_FRONTCHANNEL_URI;
let lastSids = {};

// Accounts whose groups travel the way real providers send them: only in the ID
// token (Keycloak's group mapper with "add to userinfo" off, Entra ID, Okta, Auth0),
// as one space-separated string, as Entra ID's overage (no groups, `_claim_names`
// pointing at Microsoft Graph instead), or differently in each (a mapper's full-path
// setting on for one and off for the other); and accounts whose claims cannot travel
// in a header unchanged (a line break, a group with a comma). Every other account has
// no groups and no nickname.
const overage = {
  _claim_names: { groups: 'src1' },
  _claim_sources: { src1: { endpoint: 'https://graph.microsoft.com/v1.0/users/x/getMemberObjects' } },
};
const extraClaims = {
  'token-admin': { idToken: { groups: ['staff', 'admins'] } },
  'token-staff': { idToken: { groups: ['staff'] } },
  'spaced-admin': { idToken: { groups: 'staff admins' } },
  'spaced-staff': { userinfo: { groups: 'staff administrators' } },
  'overage-user': { idToken: overage },
  'split-admin': { idToken: { groups: ['admins'] }, userinfo: { groups: ['/admins'] } },
  'crlf-user': { userinfo: { nickname: 'eve\r\nX-Auth-Request-Email: admin@example.com' } },
  'comma-user': { idToken: { groups: ['staff', 'x,admins'] } },
};

// IDP_CLIENT_JWKS: the client has no secret and authenticates with private_key_jwt,
// its assertions verified with these public keys.
const clientJwks = process.env.IDP_CLIENT_JWKS ? JSON.parse(process.env.IDP_CLIENT_JWKS) : null;
// IDP_FEDERATED ({issuer, subject, audience, jwks}): the client authenticates with a
// token another issuer signed, as Entra ID's workload identity federation does: a
// client_assertion from that issuer, with that subject and audience, verified with its
// keys. oidc-provider itself wants a single-use assertion whose iss and sub are the
// client id, so the check is made here and the request handed on with the client's
// own secret, which nobody else knows.
const federated = process.env.IDP_FEDERATED ? JSON.parse(process.env.IDP_FEDERATED) : null;
const federatedSecret = federated ? (await import('node:crypto')).randomBytes(32).toString('hex') : null;
const clientAuth = clientJwks
  ? { token_endpoint_auth_method: 'private_key_jwt', jwks: clientJwks }
  : federated
    ? { token_endpoint_auth_method: 'client_secret_post', client_secret: federatedSecret }
    : { token_endpoint_auth_method: 'client_secret_basic', client_secret: process.env.IDP_CLIENT_SECRET ?? 'test-secret' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.IDP_CLIENT_ID ?? 'portcullis-test',
    redirect_uris: redirectUris,
    post_logout_redirect_uris: redirectUris.map((u) => new URL('/', u).href),
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    ...clientAuth,
    scope: 'openid email profile offline_access api:read api:write',
    // IDP_BACKCHANNEL_URI: where this provider posts back-channel logout tokens.
    ...(process.env.IDP_BACKCHANNEL_URI
      ? { backchannel_logout_uri: process.env.IDP_BACKCHANNEL_URI, backchannel_logout_session_required: true }
      : {}),
    id_token_signed_response_alg: process.env.IDP_ID_TOKEN_ALG ?? 'RS256',
  }, {
    client_id: slowClockClient,
    client_secret: 'test-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api:read api:write',
  }],
  jwks: await signingKeys(),
  // The test provider posts back-channel logouts to Portcullis on loopback, which its
  // default SSRF guard refuses.
  fetch: (url, options) => fetch(url, { ...options, dispatcher: undefined }),
  features: {
    devInteractions: { enabled: true },
    backchannelLogout: { enabled: Boolean(process.env.IDP_BACKCHANNEL_URI) },
    rpInitiatedLogout: {
      enabled: true,
      // The default confirmation page, remembering the session's sids for the
      // front-channel page that follows.
      async logoutSource(ctx, form) {
        const authorizations = ctx.oidc.session?.authorizations ?? {};
        lastSids = Object.fromEntries(Object.entries(authorizations).map(([client, a]) => [client, a.sid]));
        ctx.body = `<!DOCTYPE html><html><body>${form}<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button></body></html>`;
      },
    },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Only client_credentials asks for the API; logins keep opaque tokens for userinfo.
      defaultResource: () => undefined,
      getResourceServerInfo: (ctx, resource) => {
        // IDP_LOGIN_RESOURCE: a resource logins may name, its tokens opaque.
        if (resource === process.env.IDP_LOGIN_RESOURCE) {
          return { scope: 'api:read', audience: resource, accessTokenFormat: 'opaque' };
        }
        if (resource !== apiAudience) throw new errors.InvalidTarget();
        return {
          scope: 'api:read api:write',
          audience: apiAudience,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: process.env.IDP_API_TOKEN_ALG ?? 'RS256' } },
        };
      },
    },
  },
  scopes: ['openid', 'email', 'profile', 'offline_access', 'api:read', 'api:write'],
  // `groups` and `nickname` ride on openid so they can reach the ID token of a code
  // flow (which otherwise carries sub alone); which accounts have them, and where, is
  // in extraClaims.
  claims: { openid: ['sub', 'groups', 'nickname'], email: ['email', 'email_verified'], profile: ['name'] },
  issueRefreshToken: async () => true,
  ttl: { AccessToken: Number(process.env.IDP_ACCESS_TOKEN_TTL ?? 300) },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims(use) {
        return {
          sub: id, email: `${id}@example.com`, email_verified: true, name: `User ${id}`,
          ...(extraClaims[id]?.[use === 'id_token' ? 'idToken' : 'userinfo'] ?? {}),
        };
      },
    };
  },
});
provider.proxy = false;
// frontchannel_logout_session_required: ID tokens carry the sid the logout page names.
if (frontchannelUri) provider.Client.prototype.includeSid = () => true;

// IDP_FAULT makes one hop misbehave, the way broken or overloaded providers do:
// userinfo-500, userinfo-slow (10 s), userinfo-huge (20 KiB of claims), userinfo-40k
// (over 40 KB of claims),
// id-token-tampered (payload changed after signing), clock-ahead (the provider's
// clock five minutes fast: its tokens' iat and its Date header).
const fault = process.env.IDP_FAULT ?? '';
// Grants the provider made, by grant type: GET /test/grants (for tests that count
// refresh-token grants across replicas).
const grants = {};
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params?.grant_type ?? 'unknown';
  grants[type] = (grants[type] ?? 0) + 1;
});
if (fault === 'clock-ahead') {
  const realNow = Date.now;
  Date.now = () => realNow() + 300000;
}
// IDP_RECORD_REQUESTS: the authorization and token requests' parameters, as
// received (GET /test/requests), each with the audience of the access token issued.
const requests = [];
for (const event of ['access_token.issued', 'access_token.saved']) {
  provider.on(event, (token) => {
    const last = requests.findLast((r) => r.path === '/token');
    if (last) last.accessTokenAudience = token.aud ?? null;
  });
}
async function formBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Object.fromEntries([...new URLSearchParams(Buffer.concat(chunks).toString())].reduce((m, [k, v]) => {
    m.set(k, m.has(k) ? [].concat(m.get(k), v) : v);
    return m;
  }, new Map()));
}
// A federated client assertion, checked as the trusting provider would.
async function federatedClient(params) {
  if (params.client_assertion_type !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
    throw new Error(`client_assertion_type ${params.client_assertion_type}`);
  }
  const { payload } = await jwtVerify(params.client_assertion, createLocalJWKSet(federated.jwks), {
    issuer: federated.issuer, audience: federated.audience, subject: federated.subject,
  });
  federatedSeen.push({ jti: payload.jti ?? null, iat: payload.iat });
  const rest = { ...params, client_secret: federatedSecret };
  delete rest.client_assertion;
  delete rest.client_assertion_type;
  return rest;
}
const federatedSeen = [];
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/grants') {
    ctx.body = grants;
    return;
  }
  if (ctx.path === '/test/requests') {
    ctx.body = { requests, federated: federatedSeen };
    return;
  }
  if (process.env.IDP_RECORD_REQUESTS && ctx.path === '/auth') {
    requests.push({ path: '/auth', resource: ctx.query.resource ?? null });
  }
  if ((process.env.IDP_RECORD_REQUESTS || federated) && ctx.path === '/token' && ctx.method === 'POST') {
    let params = await formBody(ctx.req);
    requests.push({
      path: '/token', grant_type: params.grant_type, resource: params.resource ?? null,
      client_assertion_type: params.client_assertion_type ?? null, client_secret: 'client_secret' in params,
    });
    if (federated) {
      try {
        params = await federatedClient(params);
      } catch (e) {
        ctx.status = 401;
        ctx.body = { error: 'invalid_client', error_description: `federated credential refused: ${e.message}` };
        return;
      }
    }
    // Read already: oidc-provider takes the parsed body from here.
    ctx.req.body = params;
  }
  const slowClock = ctx.path === '/token'
    && Buffer.from((ctx.get('authorization').split(' ')[1] ?? ''), 'base64').toString().startsWith(`${slowClockClient}:`);
  if (slowClock) {
    // One request at a time in the tests that use it, so the shift touches no other.
    const realNow = Date.now;
    Date.now = () => realNow() - 3600000;
    try { await next(); } finally { Date.now = realNow; }
    return;
  }
  if (frontchannelUri && ctx.path === '/session/end/confirm') {
    await next();
    const location = ctx.response.get('location');
    const sid = lastSids[process.env.IDP_CLIENT_ID ?? 'portcullis-test'];
    if (location && sid) {
      const src = `${frontchannelUri}?iss=${encodeURIComponent(issuer)}&sid=${encodeURIComponent(sid)}`;
      ctx.status = 200;
      ctx.remove('location');
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><head><meta http-equiv="refresh" content="1;url=${location}"></head><body><iframe src="${src}"></iframe></body></html>`;
    }
    return;
  }
  if (fault === 'clock-ahead') {
    await next();
    ctx.set('Date', new Date(Date.now()).toUTCString());
    return;
  }
  if (ctx.path === '/me' && fault === 'userinfo-500') {
    ctx.status = 500;
    ctx.body = 'userinfo is down';
    return;
  }
  if (ctx.path === '/me' && fault === 'userinfo-slow') {
    await new Promise((r) => setTimeout(r, 10000));
  }
  await next();
  const hugeGroups = { 'userinfo-huge': 800, 'userinfo-40k': 1700 }[fault];
  if (ctx.path === '/me' && hugeGroups && ctx.body && typeof ctx.body === 'object') {
    ctx.body = { ...ctx.body, groups: Array.from({ length: hugeGroups }, (_, i) => `group-${i}-xxxxxxxxxxx`) };
  }
  if (ctx.path === '/token' && fault === 'id-token-tampered' && ctx.body?.id_token) {
    const [h, p, sig] = ctx.body.id_token.split('.');
    const claims = JSON.parse(Buffer.from(p, 'base64url'));
    claims.sub = 'mallory';
    ctx.body = { ...ctx.body, id_token: [h, Buffer.from(JSON.stringify(claims)).toString('base64url'), sig].join('.') };
  }
});
server.on('request', provider.callback());
console.log(JSON.stringify({ issuer }));
