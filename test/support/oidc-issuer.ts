// A local OIDC identity provider, as a CI system would run one: discovery document and JWKS over
// HTTP on 127.0.0.1, and id tokens signed with jose. Started and stopped by the suite. berth
// fetches from it only when its `host` is in outbound.allowHosts (BERTH_OUTBOUND_ALLOW_HOSTS):
// plain http and the loopback are both refused otherwise.
import { createServer, type Server } from 'node:http';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';

export interface OidcIssuer {
  readonly issuer: string;
  /** 127.0.0.1:PORT, the outbound.allowHosts entry that lets berth reach it. */
  readonly host: string;
  /** An id token for the given claims (iss, aud 'berth', iat and a 5-minute exp by default). */
  idToken(claims: Record<string, unknown>): Promise<string>;
  stop(): Promise<void>;
}

export async function startOidcIssuer(): Promise<OidcIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ci-key-1', alg: 'ES256', use: 'sig' };
  let issuer = '';
  const server: Server = createServer((req, res) => {
    const body =
      req.url === '/.well-known/openid-configuration'
        ? { issuer, jwks_uri: `${issuer}/jwks`, id_token_signing_alg_values_supported: ['ES256'] }
        : req.url === '/jwks'
          ? { keys: [jwk] }
          : undefined;
    res.writeHead(body ? 200 : 404, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(body ?? { error: 'not found' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  issuer = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    issuer,
    host: new URL(issuer).host,
    async idToken(claims) {
      const iat = Math.floor(Date.now() / 1000);
      return new SignJWT({ iss: issuer, aud: 'berth', iat, exp: iat + 300, ...claims })
        .setProtectedHeader({ alg: 'ES256', kid: jwk.kid, typ: 'JWT' })
        .sign(privateKey);
    },
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}
