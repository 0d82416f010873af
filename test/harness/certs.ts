/**
 * Test PKI made with the openssl command line (Debian's openssl): a CA, a
 * server certificate for localhost and 127.0.0.1 (also usable as a client
 * certificate, as the services use theirs under mutual TLS), a client
 * certificate, and a client certificate from an unrelated CA. EC P-256 keys,
 * valid one day.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

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
    makeLeaf(dir, 'server', 'ca', leaf('serverAuth,clientAuth', 'subjectAltName=DNS:localhost,IP:127.0.0.1\n')),
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
