// HTTPS material for the server. By default berth runs its own small CA: on first start it makes a
// CA and a server certificate signed by it and keeps both under DATA/tls; later starts reuse the CA
// (clients that trust ca.crt keep working) and re-issue only the server certificate when it nears
// expiry or no longer names every host we answer to. Alternatively an operator-supplied cert/key pair
// is used as is and reloaded when the files change.
//
// node-forge builds and signs certificates (it is the project's only importer); node's crypto makes
// the RSA keys (native, off the event loop, ~10x faster than forge) and does every check on the
// result, so what we verify is what TLS clients will see.

import { createPrivateKey, generateKeyPair, type KeyObject, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { isIP, isIPv4 } from 'node:net';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import forge from 'node-forge';
import { ConfigError } from './errors.ts';

export interface TlsOptions {
  dataDir: string;
  /** An operator-supplied certificate (PEM, leaf first, chain may follow); needs keyFile. */
  certFile?: string;
  keyFile?: string;
  /** Extra DNS names or IP addresses the generated server certificate must cover. */
  names?: readonly string[];
  /** How often watchTls looks: default 2 s for configured files, 12 h (renewal) for generated ones. */
  intervalMs?: number;
}

export interface TlsMaterial {
  /** PEM private key. */
  key: string;
  /** PEM certificate (configured files may carry a chain after the leaf). */
  cert: string;
  /** The generated CA certificate clients should trust; undefined for configured material. */
  caPath?: string;
  source: 'generated' | 'configured';
  notAfter: Date;
  /** The DNS names and IP addresses the certificate covers. */
  names: string[];
}

const DAY_MS = 24 * 60 * 60 * 1000;
const CA_VALIDITY_DAYS = 3650;
// Apple and the CA/B forum cap server certificates at 398 days; stay under it.
const SERVER_VALIDITY_DAYS = 397;
const RENEW_BEFORE_DAYS = 30;
// Tolerate clients whose clocks run a little behind ours.
const BACKDATE_MS = 60 * 60 * 1000;

const generateKeyPairAsync = promisify(generateKeyPair);

interface CaFiles {
  cert: string;
  key: string;
}

/** Load the configured pair, or load/create the generated CA and server certificate under DATA/tls. */
export async function loadOrCreateTls(opts: TlsOptions): Promise<TlsMaterial> {
  if (opts.certFile !== undefined || opts.keyFile !== undefined) return loadConfigured(opts);

  const wanted = wantedNames(opts.names ?? []);
  const dir = join(opts.dataDir, 'tls');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const paths = {
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
  };

  const ca = (await loadCa(paths.caCert, paths.caKey)) ?? (await createCa(paths.caCert, paths.caKey));
  const caX509 = new X509Certificate(ca.cert);

  const existing = await readPair(paths.cert, paths.key);
  if (existing && reusable(existing, caX509, wanted)) {
    return generatedMaterial(existing, paths.caCert);
  }

  const issued = await issueServerCert(ca, caX509, wanted);
  // Key first: a crash between the two writes leaves a mismatched pair, which the next start re-issues.
  await writeAtomic(paths.key, issued.key, 0o600);
  await writeAtomic(paths.cert, issued.cert, 0o644);
  return generatedMaterial(issued, paths.caCert);
}

/**
 * Follow changes to the TLS material. For configured files it polls both paths (a stat every
 * intervalMs, so replacing a file by rename is seen too) and calls onChange once both parse and the
 * key matches the certificate; a bad pair is reported through onError, once it has stayed bad for a
 * whole interval (so replacing the two files one after the other does not raise a false alarm), and
 * the caller keeps serving the old one. For generated material it re-runs loadOrCreateTls every
 * intervalMs (default 12 h) so a long-running server renews its certificate before it expires.
 * Returns a function that stops watching.
 */
export function watchTls(
  opts: TlsOptions,
  onChange: (m: TlsMaterial) => void,
  onError: (e: Error) => void,
): () => void {
  const configured = opts.certFile !== undefined || opts.keyFile !== undefined;
  const interval = opts.intervalMs ?? (configured ? 2000 : 12 * 60 * 60 * 1000);
  let stopped = false;
  let busy = false;

  const certPath = configured ? (opts.certFile ?? '') : join(opts.dataDir, 'tls', 'server.crt');
  const keyPath = configured ? (opts.keyFile ?? '') : join(opts.dataDir, 'tls', 'server.key');
  let current = readSync(certPath) + '\0' + readSync(keyPath);
  let lastSignature = configured ? signatureOf([certPath, keyPath]) : '';
  // A failure seen once is reported only if the files are unchanged at the next look.
  let pendingFailure: { signature: string; error: Error } | undefined;
  let reportedSignature: string | undefined;

  const deliver = (m: TlsMaterial): void => {
    const next = m.cert + '\0' + m.key;
    if (next === current) return;
    current = next;
    onChange(m);
  };

  const tickGenerated = async (): Promise<void> => {
    try {
      const m = await loadOrCreateTls(opts);
      if (!stopped) deliver(m);
    } catch (e) {
      if (!stopped) onError(asError(e));
    }
  };

  const tickConfigured = async (): Promise<void> => {
    const signature = signatureOf([certPath, keyPath]);
    if (stopped) return;
    if (signature === lastSignature) {
      if (pendingFailure && pendingFailure.signature === signature && reportedSignature !== signature) {
        reportedSignature = signature;
        onError(pendingFailure.error);
      }
      pendingFailure = undefined;
      return;
    }
    lastSignature = signature;
    try {
      const m = await loadConfigured(opts);
      if (stopped) return;
      pendingFailure = undefined;
      reportedSignature = undefined;
      deliver(m);
    } catch (e) {
      pendingFailure = { signature, error: asError(e) };
    }
  };

  const timer = setInterval(() => {
    if (busy || stopped) return;
    busy = true;
    (configured ? tickConfigured() : tickGenerated()).finally(() => {
      busy = false;
    });
  }, interval);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/** Lines telling a human how to make common clients trust the generated CA for hostPort ('localhost:5000'). */
export function trustInstructions(caPath: string, hostPort: string): string[] {
  const ca = shellQuote(caPath);
  const docker = shellQuote(`/etc/docker/certs.d/${hostPort}`);
  const containers = shellQuote(`/etc/containers/certs.d/${hostPort}`);
  return [
    `berth serves HTTPS with a certificate from its own local CA: ${caPath}`,
    `Clients must trust that CA to reach https://${hostPort}:`,
    `  docker:   sudo mkdir -p ${docker} && sudo cp ${ca} ${docker}/ca.crt`,
    `  podman, skopeo, buildah: sudo mkdir -p ${containers} && sudo cp ${ca} ${containers}/ca.crt`,
    `            (rootless: ~/.config/containers/certs.d/${hostPort}/ca.crt, or pass --cert-dir DIR with DIR/ca.crt)`,
    `  curl:     curl --cacert ${ca} https://${hostPort}/v2/`,
  ];
}

// ---- configured material ----

async function loadConfigured(opts: TlsOptions): Promise<TlsMaterial> {
  if (opts.certFile === undefined)
    throw new ConfigError('tls.certFile', 'is required when tls.keyFile is set');
  if (opts.keyFile === undefined)
    throw new ConfigError('tls.keyFile', 'is required when tls.certFile is set');
  const cert = await readConfigured('tls.certFile', opts.certFile);
  const key = await readConfigured('tls.keyFile', opts.keyFile);

  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw new ConfigError(
      'tls.certFile',
      `${opts.certFile} is not a PEM certificate (${asError(e).message})`,
    );
  }
  let keyObject: KeyObject;
  try {
    keyObject = createPrivateKey(key);
  } catch (e) {
    throw new ConfigError(
      'tls.keyFile',
      `${opts.keyFile} is not an unencrypted PEM private key (${asError(e).message})`,
    );
  }
  if (!x509.checkPrivateKey(keyObject)) {
    throw new ConfigError(
      'tls.keyFile',
      `${opts.keyFile} does not match the certificate in tls.certFile (${opts.certFile})`,
    );
  }
  return { key, cert, source: 'configured', notAfter: x509.validToDate, names: sanNames(x509) };
}

async function readConfigured(key: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError(key, `cannot read ${path} (${errorCode(e)})`);
  }
}

// ---- generated material ----

function generatedMaterial(pair: CaFiles, caPath: string): TlsMaterial {
  const x509 = new X509Certificate(pair.cert);
  return {
    key: pair.key,
    cert: pair.cert,
    caPath,
    source: 'generated',
    notAfter: x509.validToDate,
    names: sanNames(x509),
  };
}

async function loadCa(certPath: string, keyPath: string): Promise<CaFiles | undefined> {
  const cert = await readOptional(certPath);
  // No ca.crt means no client can trust this CA yet, so a stray ca.key may be replaced.
  if (cert === undefined) return undefined;
  const key = await readOptional(keyPath);
  const startOver = `remove ${join(certPath, '..')} to create a new CA (clients must then trust the new ca.crt)`;
  if (key === undefined) {
    throw new ConfigError(
      'data',
      `${certPath} exists but its key ${keyPath} is missing; restore it or ${startOver}`,
    );
  }
  try {
    const x509 = new X509Certificate(cert);
    if (!x509.ca || !x509.checkPrivateKey(createPrivateKey(key))) throw new Error('key does not match');
    forge.pki.privateKeyFromPem(key);
    forge.pki.certificateFromPem(cert);
  } catch (e) {
    throw new ConfigError(
      'data',
      `${certPath} and ${keyPath} are not a usable CA (${asError(e).message}); ${startOver}`,
    );
  }
  return { cert, key };
}

async function createCa(certPath: string, keyPath: string): Promise<CaFiles> {
  const keys = await newRsaKeyPair();
  const now = Date.now();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKey);
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now - BACKDATE_MS);
  cert.validity.notAfter = new Date(now + CA_VALIDITY_DAYS * DAY_MS);
  // A random suffix keeps the CAs of two installations on one host apart in trust stores.
  const commonName = `berth local CA ${randomBytes(4).toString('hex')} ${hostname()}`.slice(0, 64);
  const subject = [
    { name: 'commonName', value: commonName },
    { name: 'organizationName', value: 'berth' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(keys.privateKey), forge.md.sha256.create());
  const ca = { cert: forge.pki.certificateToPem(cert), key: keys.privateKey };
  // Key first: a ca.key without ca.crt is replaced on the next start, the reverse would be fatal.
  await writeAtomic(keyPath, ca.key, 0o600);
  await writeAtomic(certPath, ca.cert, 0o644);
  return ca;
}

async function issueServerCert(ca: CaFiles, caX509: X509Certificate, wanted: Name[]): Promise<CaFiles> {
  const keys = await newRsaKeyPair();
  const caCert = forge.pki.certificateFromPem(ca.cert);
  const now = Date.now();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKey);
  cert.serialNumber = randomSerial();
  cert.validity.notBefore = new Date(now - BACKDATE_MS);
  // Never outlive the issuer: verifiers reject a chain where the CA expires first.
  cert.validity.notAfter = new Date(
    Math.min(now + SERVER_VALIDITY_DAYS * DAY_MS, caX509.validToDate.getTime()),
  );
  const first = wanted.find((n) => n.kind === 'dns' && n.value !== 'localhost') ?? wanted[0];
  cert.setSubject([
    { name: 'commonName', value: (first?.value ?? 'localhost').slice(0, 64) },
    { name: 'organizationName', value: 'berth' },
  ]);
  cert.setIssuer(caCert.subject.attributes);
  const caKeyId = caCert.getExtension('subjectKeyIdentifier') as
    | { subjectKeyIdentifier?: string }
    | undefined;
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: wanted.map((n) =>
        n.kind === 'dns'
          ? { type: 2, value: n.value }
          : { type: 7, value: ipBytes(n.value).toString('binary') },
      ),
    },
    { name: 'subjectKeyIdentifier' },
    {
      name: 'authorityKeyIdentifier',
      keyIdentifier: caKeyId?.subjectKeyIdentifier
        ? forge.util.hexToBytes(caKeyId.subjectKeyIdentifier)
        : caCert.generateSubjectKeyIdentifier().getBytes(),
    },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(ca.key), forge.md.sha256.create());
  const issued = { cert: forge.pki.certificateToPem(cert), key: keys.privateKey };

  // Check the result with the verifier TLS uses rather than trust the builder.
  const x509 = new X509Certificate(issued.cert);
  if (!reusable(issued, caX509, wanted)) {
    throw new Error(
      `tls: issued server certificate ${x509.serialNumber} does not verify against ${caX509.subject}`,
    );
  }
  return issued;
}

/** Whether a stored server pair can be served: signed by this CA, its own key, valid a while yet, all names. */
function reusable(pair: CaFiles, ca: X509Certificate, wanted: Name[]): boolean {
  try {
    const x509 = new X509Certificate(pair.cert);
    if (!x509.checkIssued(ca) || !x509.verify(ca.publicKey)) return false;
    if (!x509.checkPrivateKey(createPrivateKey(pair.key))) return false;
    const now = Date.now();
    if (x509.validFromDate.getTime() > now + BACKDATE_MS) return false;
    if (x509.validToDate.getTime() < now + RENEW_BEFORE_DAYS * DAY_MS) return false;
    const covered = new Set(sanNames(x509));
    return wanted.every((n) => covered.has(n.value));
  } catch {
    return false;
  }
}

async function newRsaKeyPair(): Promise<{ publicKey: string; privateKey: string }> {
  return generateKeyPairAsync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  });
}

/** 128 random bits as a positive, minimally encoded DER INTEGER (forge writes the hex as is). */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return bytes.toString('hex');
}

// ---- names ----

interface Name {
  kind: 'dns' | 'ip';
  /** Lower-case DNS name, or the canonical (RFC 5952) text of an IP address. */
  value: string;
}

const DNS_LABEL = '[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?';
const DNS_NAME = new RegExp(`^(?:\\*\\.)?${DNS_LABEL}(?:\\.${DNS_LABEL})*$`);

function wantedNames(extra: readonly string[]): Name[] {
  const names = new Map<string, Name>();
  const add = (name: Name | undefined): void => {
    if (name) names.set(name.value, name);
  };
  for (const raw of extra) {
    const name = parseName(raw);
    if (!name) throw new ConfigError('tls.names', `${JSON.stringify(raw)} is not a DNS name or IP address`);
    add(name);
  }
  // A host name that is not a valid DNS name (it happens) is left out rather than fail the start.
  add(parseName(hostname()));
  add(parseName('localhost'));
  add(parseName('127.0.0.1'));
  add(parseName('::1'));
  return [...names.values()];
}

function parseName(raw: string): Name | undefined {
  let text = raw.trim();
  if (text.startsWith('[') && text.endsWith(']')) text = text.slice(1, -1);
  if (isIP(text) !== 0 && !text.includes('%')) return { kind: 'ip', value: canonicalIp(text) };
  const dns = text.toLowerCase().replace(/\.$/, '');
  if (dns.length > 0 && dns.length <= 253 && DNS_NAME.test(dns)) return { kind: 'dns', value: dns };
  return undefined;
}

/** The names in a certificate's subjectAltName, DNS names lower-cased, IPs in canonical form. */
function sanNames(x509: X509Certificate): string[] {
  const names: string[] = [];
  for (const entry of (x509.subjectAltName ?? '').split(', ')) {
    if (entry.startsWith('DNS:')) names.push(entry.slice(4).toLowerCase());
    else if (entry.startsWith('IP Address:')) {
      const ip = entry.slice(11);
      names.push(isIP(ip) ? canonicalIp(ip) : ip);
    }
  }
  return names;
}

function ipBytes(ip: string): Buffer {
  if (isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  let text = ip;
  const v4Tail = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4Tail) {
    const [a, b, c, d] = v4Tail.slice(1).map(Number) as [number, number, number, number];
    text = text.slice(0, v4Tail.index) + ((a << 8) | b).toString(16) + ':' + ((c << 8) | d).toString(16);
  }
  const [head = '', tail] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = new Array<string>(8 - headGroups.length - tailGroups.length).fill('0');
  const groups = [...headGroups, ...(tail === undefined ? [] : zeros), ...tailGroups];
  const bytes = Buffer.alloc(16);
  groups.forEach((g, i) => {
    bytes.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  return bytes;
}

function canonicalIp(ip: string): string {
  if (isIPv4(ip)) return ip.split('.').map(Number).join('.');
  const bytes = ipBytes(ip);
  const groups = Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2));
  // RFC 5952: compress the longest run (of two or more) of zero groups, the first if tied.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

// ---- files ----

async function readPair(certPath: string, keyPath: string): Promise<CaFiles | undefined> {
  const cert = await readOptional(certPath);
  const key = await readOptional(keyPath);
  return cert !== undefined && key !== undefined ? { cert, key } : undefined;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if (errorCode(e) === 'ENOENT') return undefined;
    throw e;
  }
}

/** Write via a temp file and rename, so readers never see half a key and the mode is right from the start. */
async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.chmod(mode); // the umask may have narrowed a 0644
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

function signatureOf(paths: string[]): string {
  return paths
    .map((p) => {
      try {
        const s = statSync(p);
        return `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
      } catch (e) {
        return errorCode(e);
      }
    })
    .join('|');
}

function readSync(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

// ---- small helpers ----

function errorCode(e: unknown): string {
  return typeof e === 'object' && e !== null && 'code' in e ? String(e.code) : asError(e).message;
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./~-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}
