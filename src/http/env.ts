// The one Hono Env of the app: what middleware puts on the context, and what the Node adapter
// binds (absent when tests call app.request()).
import type { HttpBindings } from '@hono/node-server';
import type { Logger } from '../log.ts';

export interface AppEnv {
  Bindings: Partial<HttpBindings>;
  Variables: {
    log: Logger;
    requestId: string;
  };
}
