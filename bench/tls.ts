/**
 * Throw-away certificates for the TLS figures, made by
 * `tools/certificates.ts` (as the TLS tests make theirs) in a temporary
 * directory that the run removes: a certificate authority and a server
 * certificate it signs for `127.0.0.1` and `localhost`. Servers (TLS echo,
 * TLS hop, relay) read the certificate and key files; clients trust the CA's
 * PEM text.
 *
 * @module
 */

import { CertificateFactory } from "../tools/certificates.ts";

/** The files of one run's certificates, and the CA's PEM text. */
export interface TlsFiles {
  /** The CA's certificate (PEM text), what clients pass as `caCerts`. */
  ca: string;
  /** The CA's certificate file. */
  caFile: string;
  /** The server certificate file (for 127.0.0.1 and localhost). */
  certFile: string;
  /** The server certificate's private key file. */
  keyFile: string;
}

/** Makes a CA and a server certificate in a new temporary directory; `await using` removes it. */
export class BenchCertificates implements AsyncDisposable {
  /** The temporary directory holding the files. */
  readonly dir: string;
  /** The files. */
  readonly files: TlsFiles;
  readonly #factory: CertificateFactory;

  private constructor(factory: CertificateFactory, files: TlsFiles) {
    this.dir = factory.dir;
    this.files = files;
    this.#factory = factory;
  }

  /** Makes them; throws naming `openssl` when it is missing or fails. */
  static async create(): Promise<BenchCertificates> {
    const factory = await CertificateFactory.create("peerbase-bench-tls-");
    try {
      const ca = await factory.ca("peerbase bench CA");
      const server = await factory.server(ca);
      return new BenchCertificates(factory, {
        ca: ca.cert,
        caFile: ca.certFile,
        certFile: server.certFile,
        keyFile: server.keyFile,
      });
    } catch (error) {
      await factory[Symbol.asyncDispose]().catch(() => {});
      throw error;
    }
  }

  /** Removes the directory and everything in it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#factory[Symbol.asyncDispose]().catch(() => {});
  }
}
