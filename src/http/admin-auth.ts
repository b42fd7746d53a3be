// The admin API's view of the auth service: callers sign in with a registry token (Bearer) or
// Basic credentials, and every admin operation is a policy decision on an admin action.
import { type Auth, type Identity, reasonCode } from '../auth/index.ts';
import type { AdminDeps } from './admin.ts';
import { basicCredentials, requestInfo } from './caller.ts';

type Caller = Identity & { readonly subject: string };

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
        const creds = basicCredentials(header);
        if (!creds) return undefined;
        return caller(await auth.authenticateBasic(creds.username, creds.secret, requestInfo(c)));
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
