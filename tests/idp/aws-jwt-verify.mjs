// Verifies x-amzn-oidc-data with aws-jwt-verify's AlbJwtVerifier, the library ALB
// apps use, with its default settings; only the key URL points at Portcullis.
// Usage: node aws-jwt-verify.mjs TOKEN JWKS_URI ALB_ARN ISSUER CLIENT_ID
//   -> prints the payload, or exits 1 with the verifier's error.
import { AlbJwtVerifier } from 'aws-jwt-verify';

const [token, jwksUri, albArn, issuer, clientId] = process.argv.slice(2);
const verifier = AlbJwtVerifier.create({ albArn, issuer, clientId, jwksUri });
try {
  console.log(JSON.stringify(await verifier.verify(token)));
} catch (e) {
  console.error(`${e.name}: ${e.message}`);
  process.exit(1);
}
