// A CA of the test origin and a leaf for localhost / 127.0.0.1, made with the openssl CLI.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeOriginCertificates(dir) {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'origin-ca.key', '-out', 'origin-ca.pem', '-days', '30',
    '-subj', '/CN=asset-proxy e2e origin CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  openssl(['req', '-new', ...ec, '-keyout', 'origin.key', '-out', 'origin.csr', '-subj', '/CN=localhost'], dir);
  writeFileSync(join(dir, 'leaf.ext'), [
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'authorityKeyIdentifier=keyid',
    'subjectKeyIdentifier=hash',
  ].join('\n'));
  openssl(['x509', '-req', '-in', 'origin.csr', '-CA', 'origin-ca.pem', '-CAkey', 'origin-ca.key',
    '-CAcreateserial', '-days', '30', '-extfile', 'leaf.ext', '-out', 'origin.pem'], dir);
  return {
    caPath: join(dir, 'origin-ca.pem'),
    key: readFileSync(join(dir, 'origin.key')),
    cert: readFileSync(join(dir, 'origin.pem')),
  };
}
