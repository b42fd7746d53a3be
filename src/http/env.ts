// The one Hono Env of the app: what middleware puts on the context, and what the Node adapter
// binds (absent when tests call app.request()).
import type { HttpBindings } from '@hono/node-server';
import type { Identity } from '../auth/index.ts';
import type { Logger } from '../log.ts';

export interface AppEnv {
  Bindings: Partial<HttpBindings>;
  Variables: {
    log: Logger;
    requestId: string;
    /** The client's address: X-Forwarded-For's first hop when the proxy is trusted, else the socket's. */
    clientIp: string;
    /** scheme://host the client used: from X-Forwarded-Proto/Host when the proxy is trusted. */
    origin: string;
    /** Who is calling /v2, once registryAccess() resolved it (anonymous included). */
    identity: Identity;
  };
}
