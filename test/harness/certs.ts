/**
 * Test PKI made with the openssl command line (Debian's openssl): a CA, a
 * server certificate for localhost and 127.0.0.1 (also usable as a client
 * certificate, as the services use theirs under mutual TLS) that is a
 * service certificate (URI SAN spiffe://infermesh/service/…), a client
 * certificate, and a client certificate from an unrelated CA. EC P-256 keys,
 * valid one day. makeCert adds others (untrusted, expired, not yet valid).
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The default service URI prefix (libs/grpc SERVICE_URI_PREFIX). */
export const SERVICE_URI = 'spiffe://infermesh/service/';

export interface TestPki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A client certificate signed by another CA (must be refused). */
  rogueCert: string;
  rogueKey: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '1', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

async function makeLeaf(dir: string, name: string, ca: string, ext: string): Promise<void> {
  await writeFile(path.join(dir, `${name}.ext`), ext);
  await openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  await openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-set_serial', String(Math.floor(Math.random() * 2 ** 40)), '-out', `${name}.pem`, '-days', '1', '-extfile', `${name}.ext`]);
}

/** Creates the PKI's files in `dir` (which must exist). */
export async function makeTestPki(dir: string): Promise<TestPki> {
  await Promise.all([makeCa(dir, 'ca'), makeCa(dir, 'rogue-ca')]);
  const leaf = (eku: string, san = '') => `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${eku}\n${san}`;
  await Promise.all([
    makeLeaf(dir, 'server', 'ca', leaf('serverAuth,clientAuth', `subjectAltName=DNS:localhost,IP:127.0.0.1,URI:${SERVICE_URI}mesh\n`)),
    makeLeaf(dir, 'client', 'ca', leaf('clientAuth')),
    makeLeaf(dir, 'rogue', 'rogue-ca', leaf('clientAuth')),
  ]);
  const f = (n: string) => path.join(dir, n);
  return {
    dir,
    ca: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    rogueCert: f('rogue.pem'),
    rogueKey: f('rogue.key'),
  };
}

export interface CertOptions {
  /** Signing CA: the PKI's own (default) or the unrelated one. */
  ca?: 'ca' | 'rogue-ca';
  /** A service certificate (server and client use, localhost SANs, URI SAN with this name); else a client certificate. */
  service?: string;
  /** Validity as openssl's YYYYMMDDHHMMSSZ; default now for one day. */
  notBefore?: string;
  notAfter?: string;
}

/** Makes one more certificate `<name>.pem` and key `<name>.key` in the PKI's folder; returns their paths. */
export async function makeCert(pki: TestPki, name: string, o: CertOptions = {}): Promise<{ cert: string; key: string }> {
  const dir = pki.dir;
  const ca = o.ca ?? 'ca';
  const ext = o.service !== undefined
    ? `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,URI:${SERVICE_URI}${o.service}\n`
    : 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';
  if (!o.notBefore && !o.notAfter) {
    await makeLeaf(dir, name, ca, ext);
  } else {
    // x509 -req cannot set dates; `openssl ca` can, with a throwaway database.
    const db = path.join(dir, `${name}-db`);
    await mkdir(db, { recursive: true });
    await writeFile(path.join(db, 'index.txt'), '');
    await writeFile(path.join(db, 'serial'), `${Math.floor(Math.random() * 2 ** 24).toString(16).padStart(6, '0')}\n`);
    await writeFile(
      path.join(dir, `${name}.cnf`),
      `[ca]\ndefault_ca=d\n[d]\ndatabase=${db}/index.txt\nnew_certs_dir=${db}\nserial=${db}/serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n`,
    );
    await writeFile(path.join(dir, `${name}.ext`), ext);
    await openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
    await openssl(dir, [
      'ca', '-batch', '-config', `${name}.cnf`, '-cert', `${ca}.pem`, '-keyfile', `${ca}.key`, '-in', `${name}.csr`, '-out', `${name}.pem`, '-notext',
      '-startdate', o.notBefore ?? '20200101000000Z', '-enddate', o.notAfter ?? '20991231000000Z', '-extfile', `${name}.ext`,
    ]);
  }
  return { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
}
