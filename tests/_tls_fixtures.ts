/**
 * Throw-away certificates for the TLS tests, made with `openssl` in a
 * temporary directory: certificate authorities, server certificates they
 * sign for `localhost` and `127.0.0.1`, and self-signed ones. The making is
 * `tools/certificates.ts`, shared with the bench.
 *
 * @module
 */

export { CertificateFactory, type Pem, selfSigned } from "../tools/certificates.ts";
