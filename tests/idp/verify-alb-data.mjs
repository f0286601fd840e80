// Verifies an x-amzn-oidc-data token the way ALB's documentation does, with Node's
// own crypto (OpenSSL), independent of Portcullis: the PEM key from the key endpoint,
// ES256 over the padded `header.payload`, raw r||s signature.
// Usage: node verify-alb-data.mjs TOKEN PEM_FILE  -> prints {"header":..,"payload":..}
import { verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [token, pemFile] = process.argv.slice(2);
const [header, payload, signature] = token.split('.');
const decode = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const ok = verify(
  'sha256',
  Buffer.from(`${header}.${payload}`),
  { key: readFileSync(pemFile, 'utf8'), dsaEncoding: 'ieee-p1363' },
  Buffer.from(signature, 'base64url'),
);
if (!ok) {
  console.error('signature does not verify');
  process.exit(1);
}
console.log(JSON.stringify({ header: decode(header), payload: decode(payload) }));
