// A real OAuth 2.0 authorization server for the worker's integration tests: oidc-provider with
// PKCE required, refresh-token rotation, RFC 7009 revocation and introspection, plus
//   - /interaction/:uid, which completes login and consent without a browser
//     (`?deny=a,b` leaves those scopes unticked; `?refuse=1` refuses altogether);
//   - /api/..., a resource server checking bearer tokens and scopes: GET me (user.read),
//     POST posts (posts.write), GET big (user.read; a 2 MiB answer), GET pages (user.read;
//     an answer carrying page access tokens, as Meta's does);
//   - /_test/issued, every code and token it issued (for the leak scan);
//   - /_test/stats, call counters the tests assert on (token calls by grant type, replays of a
//     spent refresh token, revocations);
//   - /_test/faults, a queue of faults applied to the next token-endpoint calls, in order
//     (to the revocation endpoint's instead with {endpoint: "revocation"}):
//     {status, retry_after, body, content_type} answers instead of the server;
//     {delay_ms} delays (then answers `status` if given, else passes through);
//     {reset: true} drops the connection; {strip_refresh_token: true} passes through without
//     rotating and removes `refresh_token` from the response.
// Prints {"issuer": "..."} on stdout once listening; exits when stdin closes, so it never
// outlives the test process that started it.
import http from 'node:http';
import Provider from 'oidc-provider';

const clientId = process.env.PEER_CLIENT_ID ?? 'praisma-worker';
const clientSecret = process.env.PEER_CLIENT_SECRET ?? 'test-secret';
const redirectUri = process.env.PEER_REDIRECT_URI ?? 'http://127.0.0.1:9/hub/oauth/callback';
const accessTtl = Number(process.env.PEER_ACCESS_TTL ?? 3600);
const resourceScopes = 'user.read posts.read posts.write insights.read messages.read messages.write';

const stats = {
  token_calls: 0, revocations: 0, api_calls: 0, replays: 0, token_calls_in_flight: 0,
  grants: { authorization_code: 0, refresh_token: 0 }, grant_errors: {},
};
const faults = { token: [], revocation: [], api: [] };
// Every secret this server issued, for the leak scan (opaque values are the models' jti).
const issued = new Set();
let rotateNext = true;

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const api = `${issuer}/api/`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    pkce: { required: () => true },
    scopes: ['openid', 'offline_access'],
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => api,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({ scope: resourceScopes, accessTokenFormat: 'opaque', accessTokenTTL: accessTtl }),
      },
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => {
      const rotate = rotateNext;
      rotateNext = true;
      return rotate;
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    cookies: { keys: ['praisma-test-cookie-key'] },
    ttl: { AccessToken: accessTtl, AuthorizationCode: 60, Interaction: 600, Session: 600, Grant: 86400, RefreshToken: 86400 },
  });
  provider.proxy = false;
  for (const kind of ['authorization_code', 'access_token', 'refresh_token']) {
    provider.on(`${kind}.saved`, (token) => issued.add(token.jti));
  }
  provider.on('grant.success', (ctx) => {
    const type = ctx.oidc.params.grant_type;
    stats.grants[type] = (stats.grants[type] ?? 0) + 1;
  });
  provider.on('grant.error', (ctx, error) => {
    const type = ctx.oidc.params?.grant_type ?? 'unknown';
    stats.grant_errors[type] = (stats.grant_errors[type] ?? 0) + 1;
    if (String(error?.error_description ?? '').includes('already used')) stats.replays += 1;
  });
  const callback = provider.callback();

  server.on('request', async (req, res) => {
    try {
      const url = new URL(req.url, issuer);
      if (url.pathname.startsWith('/interaction/')) return await interact(provider, api, req, res, url);
      if (url.pathname.startsWith('/api/')) {
        stats.api_calls += 1;
        const fault = faults.api.shift();
        if (fault && await inject(fault, req, res)) return undefined;
        return await resourceServer(provider, req, res, url);
      }
      if (url.pathname === '/_test/issued') {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify([...issued]));
      }
      if (url.pathname === '/_test/stats') {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify(stats));
      }
      if (url.pathname === '/_test/faults' && req.method === 'POST') {
        for (const fault of JSON.parse(await readBody(req))) faults[fault.endpoint ?? 'token'].push(fault);
        res.setHeader('content-type', 'application/json');
        return res.end('{}');
      }
      if (req.method === 'POST' && url.pathname === '/token') {
        stats.token_calls += 1;
        stats.token_calls_in_flight += 1;
        res.on('close', () => { stats.token_calls_in_flight -= 1; });
        const fault = faults.token.shift();
        if (fault && await inject(fault, req, res)) return undefined;
      }
      if (req.method === 'POST' && url.pathname === '/token/revocation') {
        stats.revocations += 1;
        const fault = faults.revocation.shift();
        if (fault && await inject(fault, req, res)) return undefined;
      }
      return callback(req, res);
    } catch (error) {
      res.statusCode = 500;
      res.end(String(error?.message ?? error));
    }
  });
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

// Applies one fault; true when it answered (or dropped) the request itself.
async function inject(fault, req, res) {
  if (fault.delay_ms) await new Promise((resolve) => { setTimeout(resolve, fault.delay_ms); });
  if (fault.reset) {
    req.socket.destroy();
    return true;
  }
  if (fault.status) {
    res.statusCode = fault.status;
    if (fault.retry_after !== undefined) res.setHeader('retry-after', String(fault.retry_after));
    res.setHeader('content-type', fault.content_type ?? 'application/json');
    res.end(fault.body ?? JSON.stringify({ error: 'temporarily_unavailable' }));
    return true;
  }
  if (fault.strip_refresh_token) {
    rotateNext = false;
    const end = res.end.bind(res);
    res.end = (chunk, ...rest) => {
      let body = chunk;
      try {
        const parsed = JSON.parse(String(chunk));
        delete parsed.refresh_token;
        body = JSON.stringify(parsed);
        if (!res.headersSent) res.setHeader('content-length', Buffer.byteLength(body));
      } catch { /* not JSON: leave it */ }
      return end(body, ...rest);
    };
  }
  return false;
}

async function interact(provider, api, req, res, url) {
  const details = await provider.interactionDetails(req, res);
  if (url.searchParams.get('refuse') === '1') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  const accountId = 'user-1';
  const deny = new Set((url.searchParams.get('deny') ?? '').split(',').filter(Boolean));
  const requested = String(details.params.scope ?? '').split(' ').filter(Boolean);
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  const oidc = requested.filter((s) => s === 'openid' || s === 'offline_access');
  if (oidc.length) grant.addOIDCScope(oidc.join(' '));
  const resource = requested.filter((s) => !oidc.includes(s));
  const granted = resource.filter((s) => !deny.has(s));
  const rejected = resource.filter((s) => deny.has(s));
  if (granted.length) grant.addResourceScope(api, granted.join(' '));
  if (rejected.length) grant.rejectResourceScope(api, rejected.join(' '));
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, {
    login: { accountId }, consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

async function resourceServer(provider, req, res, url) {
  const header = req.headers.authorization ?? '';
  const token = header.startsWith('Bearer ') ? await provider.AccessToken.find(header.slice(7)) : undefined;
  res.setHeader('content-type', 'application/json');
  const answer = (status, body) => {
    res.statusCode = status;
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
  if (!token) return answer(401, { error: 'invalid_token' });
  const scopes = new Set(String(token.scope ?? '').split(' '));
  const route = `${req.method} ${url.pathname.slice('/api/'.length)}`;
  const needs = { 'GET me': 'user.read', 'POST posts': 'posts.write', 'GET big': 'user.read', 'GET pages': 'user.read' }[route];
  if (!needs) return answer(404, { error: 'not_found' });
  if (!scopes.has(needs)) return answer(403, { error: 'insufficient_scope', scope: needs });
  switch (route) {
    case 'GET me': return answer(200, { id: token.accountId, scope: token.scope });
    case 'POST posts': {
      const body = JSON.parse((await readBody(req)) || '{}');
      return answer(201, { id: `post-${stats.api_calls}`, text: body.text ?? null });
    }
    case 'GET big': return answer(200, JSON.stringify({ blob: 'x'.repeat(2 * 1024 * 1024) }));
    default: return answer(200, { data: [{ id: 'page-9', name: 'A Page', access_token: 'EAAPAGETOKENVALUE' }] });
  }
}

process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
