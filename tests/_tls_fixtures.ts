/**
 * Throw-away certificates for the TLS tests, made with `openssl` in a
 * temporary directory: certificate authorities, server certificates they
 * sign for `localhost` and `127.0.0.1`, and self-signed ones.
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

/** Makes certificates in a temporary directory; `await using` removes it. */
export class CertificateFactory implements AsyncDisposable {
  /** The temporary directory holding every file. */
  readonly dir: string;
  #count = 0;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** A factory with a new, empty temporary directory. */
  static async create(): Promise<CertificateFactory> {
    return new CertificateFactory(await Deno.makeTempDir({ prefix: "peerbase-tls-" }));
  }

  /** A new certificate authority (self-signed, `CA:TRUE`) named `subject`. */
  async ca(subject = "peerbase test CA"): Promise<Pem> {
    const files = this.#files("ca");
    await openssl(
      "req",
      "-x509",
      ...NEW_EC_KEY,
      "-days",
      "1",
      "-subj",
      `/CN=${subject}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
      "-keyout",
      files.keyFile,
      "-out",
      files.certFile,
    );
    return await read(files);
  }

  /** A server certificate for `localhost` and `127.0.0.1`, signed by `ca`. */
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
      "1",
      "-extfile",
      extensions,
      "-out",
      files.certFile,
    );
    return await read(files);
  }

  /** A self-signed server certificate for `localhost` and `127.0.0.1`. */
  async selfSigned(): Promise<Pem> {
    const files = this.#files("self");
    await openssl(
      "req",
      "-x509",
      ...NEW_EC_KEY,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-addext",
      SERVER_NAMES,
      "-addext",
      "basicConstraints=critical,CA:FALSE",
      "-keyout",
      files.keyFile,
      "-out",
      files.certFile,
    );
    return await read(files);
  }

  /** Removes the directory and everything in it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }

  #files(kind: string): { certFile: string; keyFile: string } {
    const n = ++this.#count;
    return { certFile: `${this.dir}/${kind}${n}.pem`, keyFile: `${this.dir}/${kind}${n}.key` };
  }
}

/** A throw-away self-signed certificate for localhost and 127.0.0.1 (PEM text only). */
export async function selfSigned(): Promise<{ cert: string; key: string }> {
  await using factory = await CertificateFactory.create();
  const { cert, key } = await factory.selfSigned();
  return { cert, key };
}

/** Runs `openssl` with `args`; throws with its stderr when it fails. */
async function openssl(...args: string[]): Promise<void> {
  const { success, stderr } = await new Deno.Command("openssl", {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(stderr)}`);
  }
}

async function read(files: { certFile: string; keyFile: string }): Promise<Pem> {
  return {
    ...files,
    cert: await Deno.readTextFile(files.certFile),
    key: await Deno.readTextFile(files.keyFile),
  };
}
