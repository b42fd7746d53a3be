// The admin API's view of the auth service: callers sign in with a registry token (Bearer) or
// Basic credentials, and every admin operation is a policy decision on an admin action.
import type { Context } from 'hono';
import { type Auth, type Identity, type RequestInfo, reasonCode } from '../auth/index.ts';
import type { AdminDeps } from './admin.ts';
import type { AppEnv } from './env.ts';

type Caller = Identity & { readonly subject: string };

function requestInfo(c: Context<AppEnv>): RequestInfo {
  return {
    sourceIp: c.get('clientIp'),
    requestId: c.get('requestId'),
    secure: c.get('origin').startsWith('https:'),
  };
}

export function adminAuth(auth: Auth, service: string): AdminDeps<Caller> {
  const caller = (identity: Identity): Caller => ({
    ...identity,
    subject: `${identity.principal.type}/${identity.principal.name}`,
  });
  return {
    identities: auth.identities,
    policies: auth.policies,
    federation: auth.federation,
    audit: auth.audit,
    bearerService: service,
    async authenticate(c) {
      if (!auth.enabled) return caller(auth.anonymous());
      const header = c.req.header('authorization') ?? '';
      if (/^bearer /i.test(header))
        return caller(await auth.authenticateBearer(header.slice(7).trim(), requestInfo(c)));
      if (/^basic /i.test(header)) {
        const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
        const colon = decoded.indexOf(':');
        if (colon < 0) return undefined;
        return caller(
          await auth.authenticateBasic(decoded.slice(0, colon), decoded.slice(colon + 1), requestInfo(c)),
        );
      }
      return undefined;
    },
    async authorize(who, action, resource, c) {
      const d = await auth.authorize(who, action, resource, requestInfo(c));
      return { effect: d.effect, reason: reasonCode(d) };
    },
    simulate: (input) => auth.simulate(input),
    revokeSessions: (subject) => auth.revokeSessions(subject),
  };
}
