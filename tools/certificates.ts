/**
 * Throw-away TLS certificates for the tests and the bench, made with `openssl`
 * in a temporary directory that `await using` removes: certificate
 * authorities, server certificates they sign for `localhost` and `127.0.0.1`,
 * and self-signed server certificates. Every key is P-256 and every
 * certificate is valid for one day.
 *
 * ```ts
 * await using certificates = await CertificateFactory.create();
 * const ca = await certificates.ca();
 * const server = await certificates.server(ca);
 * // A server reads server.certFile and server.keyFile; clients trust ca.cert.
 * ```
 *
 * @module
 */

/** A certificate and its key: PEM text, and the files that hold it. */
export interface Pem {
  /** The certificate (PEM). */
  cert: string;
  /** Its private key (PEM). */
  key: string;
  /** The file holding `cert`. */
  certFile: string;
  /** The file holding `key`. */
  keyFile: string;
}

/** The subject alternative names of every server certificate made here. */
const SERVER_NAMES = "subjectAltName=DNS:localhost,IP:127.0.0.1";

/** `openssl` arguments for a new P-256 key, unencrypted. */
const NEW_EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** How long every certificate made here is valid, in days. */
const DAYS = "1";

/**
 * Makes certificates in a new temporary directory; `await using` removes it.
 *
 * Every method throws an `Error` naming `openssl` when it is missing or fails.
 */
export class CertificateFactory implements AsyncDisposable {
  /** The temporary directory holding every file. */
  readonly dir: string;
  #count = 0;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * A factory with a new, empty temporary directory.
   *
   * @param prefix The start of the directory's name, to tell whose it is.
   */
  static async create(prefix = "peerbase-tls-"): Promise<CertificateFactory> {
    return new CertificateFactory(await Deno.makeTempDir({ prefix }));
  }

  /**
   * A new certificate authority (self-signed, `CA:TRUE`).
   *
   * @param subject Its common name.
   */
  async ca(subject = "peerbase test CA"): Promise<Pem> {
    return await this.#selfSigned("ca", subject, [
      "basicConstraints=critical,CA:TRUE",
      "keyUsage=critical,keyCertSign,cRLSign",
    ]);
  }

  /**
   * A server certificate for `localhost` and `127.0.0.1`, signed by `ca`.
   *
   * @param ca A certificate authority made by {@linkcode CertificateFactory.ca}.
   * @param subject Its common name.
   */
  async server(ca: Pem, subject = "localhost"): Promise<Pem> {
    const files = this.#files("server");
    const request = `${files.certFile}.csr`;
    const extensions = `${files.certFile}.ext`;
    await Deno.writeTextFile(
      extensions,
      `${SERVER_NAMES}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n`,
    );
    await openssl(
      "req",
      ...NEW_EC_KEY,
      "-subj",
      `/CN=${subject}`,
      "-keyout",
      files.keyFile,
      "-out",
      request,
    );
    await openssl(
      "x509",
      "-req",
      "-in",
      request,
      "-CA",
      ca.certFile,
      "-CAkey",
      ca.keyFile,
      "-set_serial",
      `0x${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`,
      "-days",
      DAYS,
      "-extfile",
      extensions,
      "-out",
      files.certFile,
    );
    return await read(files);
  }

  /** A self-signed server certificate for `localhost` and `127.0.0.1`. */
  async selfSigned(): Promise<Pem> {
    return await this.#selfSigned("self", "localhost", [
      SERVER_NAMES,
      "basicConstraints=critical,CA:FALSE",
    ]);
  }

  /** Removes the directory and everything in it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }

  /** A new key and a certificate it signs itself, with `extensions` added. */
  async #selfSigned(kind: string, subject: string, extensions: string[]): Promise<Pem> {
    const files = this.#files(kind);
    await openssl(
      "req",
      "-x509",
      ...NEW_EC_KEY,
      "-days",
      DAYS,
      "-subj",
      `/CN=${subject}`,
      ...extensions.flatMap((extension) => ["-addext", extension]),
      "-keyout",
      files.keyFile,
      "-out",
      files.certFile,
    );
    return await read(files);
  }

  #files(kind: string): { certFile: string; keyFile: string } {
    const n = ++this.#count;
    return { certFile: `${this.dir}/${kind}${n}.pem`, keyFile: `${this.dir}/${kind}${n}.key` };
  }
}

/** A throw-away self-signed certificate for `localhost` and `127.0.0.1` (PEM text only). */
export async function selfSigned(): Promise<{ cert: string; key: string }> {
  await using factory = await CertificateFactory.create();
  const { cert, key } = await factory.selfSigned();
  return { cert, key };
}

/** Runs `openssl` with `args`; throws naming it, with its stderr, when it fails or is missing. */
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
      `Cannot make TLS certificates: openssl did not run (${
        (error as Error).message
      }); install it (apt-get install openssl)`,
    );
  }
  if (!output.success) {
    throw new Error(
      `Cannot make TLS certificates: openssl ${args[0]} failed: ${
        new TextDecoder().decode(output.stderr).trim()
      }`,
    );
  }
}

async function read(files: { certFile: string; keyFile: string }): Promise<Pem> {
  return {
    ...files,
    cert: await Deno.readTextFile(files.certFile),
    key: await Deno.readTextFile(files.keyFile),
  };
}
