/**
 * Throw-away certificates for the TLS figures, made with `openssl` in a
 * temporary directory that the run removes: a certificate authority and a
 * server certificate it signs for `127.0.0.1` and `localhost` (P-256, as
 * `tests/_tls_fixtures.ts` makes them). Servers (TLS echo, TLS hop, relay)
 * read the certificate and key files; clients trust the CA's PEM text.
 *
 * @module
 */

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

/** `openssl` arguments for a new P-256 key, unencrypted. */
const NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** Makes a CA and a server certificate in a new temporary directory; `await using` removes it. */
export class BenchCertificates implements AsyncDisposable {
  /** The temporary directory holding the files. */
  readonly dir: string;
  /** The files. */
  readonly files: TlsFiles;

  private constructor(dir: string, files: TlsFiles) {
    this.dir = dir;
    this.files = files;
  }

  /** Makes them; throws naming `openssl` when it is missing or fails. */
  static async create(): Promise<BenchCertificates> {
    const dir = await Deno.makeTempDir({ prefix: "peerbase-bench-tls-" });
    try {
      const caFile = `${dir}/ca.pem`;
      const caKey = `${dir}/ca.key`;
      const certFile = `${dir}/server.pem`;
      const keyFile = `${dir}/server.key`;
      const ext = `${dir}/server.ext`;
      await openssl(
        "req",
        "-x509",
        ...NEW_EC_KEY,
        "-days",
        "1",
        "-subj",
        "/CN=peerbase bench CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        caKey,
        "-out",
        caFile,
      );
      await Deno.writeTextFile(
        ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
      );
      await openssl(
        "req",
        ...NEW_EC_KEY,
        "-subj",
        "/CN=localhost",
        "-keyout",
        keyFile,
        "-out",
        `${dir}/server.csr`,
      );
      await openssl(
        "x509",
        "-req",
        "-in",
        `${dir}/server.csr`,
        "-CA",
        caFile,
        "-CAkey",
        caKey,
        "-set_serial",
        "0x01",
        "-days",
        "1",
        "-extfile",
        ext,
        "-out",
        certFile,
      );
      return new BenchCertificates(dir, {
        ca: await Deno.readTextFile(caFile),
        caFile,
        certFile,
        keyFile,
      });
    } catch (error) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  /** Removes the directory and everything in it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Runs `openssl` with `args`; throws with its stderr when it fails or is missing. */
async function openssl(...args: string[]): Promise<void> {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("openssl", {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
  } catch (error) {
    throw new Error(
      `Cannot make the bench's TLS certificates: openssl did not run (${
        (error as Error).message
      }); install it (apt-get install openssl)`,
    );
  }
  if (!output.success) {
    throw new Error(
      `Cannot make the bench's TLS certificates: openssl ${args[0]} failed: ${
        new TextDecoder().decode(output.stderr).trim()
      }`,
    );
  }
}
