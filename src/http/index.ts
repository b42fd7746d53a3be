// Public surface of http/: the app factory and the server around it.
export { type App, type AppDeps, createApp } from './app.ts';
export type { Readiness } from './health.ts';
export { type RunningServer, type ServerOptions, startServer } from './server.ts';
export { credentialsOnlyApp } from './task-credentials.ts';
