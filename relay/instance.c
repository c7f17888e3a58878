/* A relay set up from flags and files (instance.h). */
#include "instance.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "net/tlsio.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "server.h"
#include "stunserver.h"

struct relay_instance {
	struct relay_server *srv;
	struct stunserver *stun;
	SSL_CTX *tls, *mesh_tls;
	char *mesh_text; /* the peer list, cut in place */
	const char *mesh[RELAY_INSTANCE_MAX_MESH + 1];
	size_t nmesh;
	char listen[128];
	char pub_b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];
	char key_text[RELAY_KEY_TEXT_LEN];
};

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

static size_t count_mesh(const char *list)
{
	size_t n = 0;

	for (const char *p = list; p && *p;) {
		const char *comma = strchr(p, ',');
		if (comma != p)
			n++;
		p = comma ? comma + 1 : p + strlen(p);
	}
	return n;
}

bool relay_instance_opts_check(const struct relay_instance_opts *o, char *err, size_t errlen)
{
	if (!o->tls_cert != !o->tls_key)
		return fail(err, errlen, "the TLS certificate and key go together");
	if (o->mesh_with && *o->mesh_with && !o->mesh_key_file)
		return fail(err, errlen, "meshing with other relays needs the region's mesh key file");
	if (count_mesh(o->mesh_with) > RELAY_INSTANCE_MAX_MESH)
		return fail(err, errlen, "more than %d relays to mesh with", RELAY_INSTANCE_MAX_MESH);
	return true;
}

int relay_key_load(const char *path, uint8_t priv[32])
{
	char text[128] = "";
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;

	if (fd < 0 && errno == ENOENT) {
		char b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_ORIGINAL)];

		randombytes_buf(priv, 32);
		priv[0] &= 248; /* clamped as X25519 and `wg genkey` do */
		priv[31] = (uint8_t)((priv[31] & 127) | 64);
		sodium_bin2base64(b64, sizeof(b64), priv, 32, sodium_base64_VARIANT_ORIGINAL);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			ret = -errno;
		else if (dprintf(fd, "%s\n", b64) < 0)
			ret = -errno;
		if (fd >= 0)
			close(fd);
		sodium_memzero(b64, sizeof(b64));
		return ret;
	}
	if (fd < 0)
		return -errno;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n < 0)
		return -EIO;
	text[n] = 0;
	text[strcspn(text, " \t\r\n")] = 0;
	if (!relay_key_parse(text, priv))
		ret = -EINVAL;
	sodium_memzero(text, sizeof(text));
	return ret;
}

static int load_secret(const char *path, uint8_t mesh_key[32])
{
	struct buf b = BUF_INIT(1 << 16);
	uint8_t chunk[4096];
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	ssize_t n = 0;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if ((ret = buf_add(&b, chunk, (size_t)n)))
			break;
	close(fd);
	sodium_memzero(chunk, sizeof(chunk));
	/* A trailing newline is not part of the secret. */
	while (!ret && b.len && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == '\r'))
		b.len--;
	if (!ret && (n < 0 || b.len == 0))
		ret = -EINVAL;
	if (!ret)
		relay_hello_mesh_key(mesh_key, b.data, b.len);
	buf_free_secure(&b);
	return ret;
}

static SSL_CTX *tls_server(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

int relay_instance_new(struct loop *loop, const struct relay_instance_opts *o, struct relay_instance **out,
		       char *err, size_t errlen)
{
	struct relay_instance *r = calloc(1, sizeof(*r));
	struct relay_server_opts so = { .listen_fd = -1 };
	uint8_t priv[32], pub[32], mesh_key[32];
	char stun_listen[80];
	int ret = 0;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	if (!relay_instance_opts_check(o, err, errlen)) {
		ret = -EINVAL;
		goto out;
	}
	if (o->key_file) {
		if ((ret = relay_key_load(o->key_file, priv)) != 0) {
			fail(err, errlen, "cannot load the relay key %s: %s", o->key_file,
			     ret == -EINVAL ? "not a base64 key" : strerror(-ret));
			goto out;
		}
	} else {
		randombytes_buf(priv, 32);
		priv[0] &= 248;
		priv[31] = (uint8_t)((priv[31] & 127) | 64);
	}
	crypto_scalarmult_base(pub, priv);
	sodium_bin2base64(r->pub_b64, sizeof(r->pub_b64), pub, 32, sodium_base64_VARIANT_ORIGINAL);
	relay_key_text(pub, r->key_text);
	if (o->mesh_key_file && (ret = load_secret(o->mesh_key_file, mesh_key)) != 0) {
		fail(err, errlen, "cannot load the mesh key %s: %s", o->mesh_key_file,
		     ret == -EINVAL ? "empty" : strerror(-ret));
		goto out;
	}
	if (o->mesh_with && *o->mesh_with) {
		char *save = NULL;

		if (!(r->mesh_text = strdup(o->mesh_with))) {
			ret = -ENOMEM;
			goto out;
		}
		for (char *tok = strtok_r(r->mesh_text, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			r->mesh[r->nmesh++] = tok;
	}
	if (o->tls_cert && !(r->tls = tls_server(o->tls_cert, o->tls_key))) {
		char why[160];

		tlsio_error("cannot load the TLS certificate or key", why, sizeof(why));
		fail(err, errlen, "%s (%s, %s)", why, o->tls_cert, o->tls_key);
		ret = -EINVAL;
		goto out;
	}
	if (r->nmesh && !(r->mesh_tls = tlsio_client_ctx(o->mesh_ca))) {
		fail(err, errlen, "cannot set up TLS for mesh links (CA %s)", o->mesh_ca ? o->mesh_ca : "(system)");
		ret = -EINVAL;
		goto out;
	}
	snprintf(r->listen, sizeof(r->listen), "%s", o->listen ? o->listen : r->tls ? "[::]:443" : "[::]:80");
	so.listen = r->listen;
	so.private_key = priv;
	so.mesh_key = o->mesh_key_file ? mesh_key : NULL;
	so.mesh_with = r->mesh;
	so.tls = r->tls;
	so.mesh_tls = r->mesh_tls;
	so.queue_bytes = o->queue_bytes;
	so.keepalive_ms = o->keepalive_ms;
	so.idle_timeout_ms = o->idle_timeout_ms;
	so.max_clients = o->max_clients;
	so.metrics = o->metrics;
	if ((ret = relay_server_new(loop, &so, &r->srv)) != 0) {
		fail(err, errlen, "cannot listen for relay connections on %s: %s", r->listen, strerror(-ret));
		goto out;
	}
	if (o->stun_port) {
		const char *a = o->stun_addr ? o->stun_addr : "::";

		snprintf(stun_listen, sizeof(stun_listen), strchr(a, ':') ? "[%s]:%u" : "%s:%u", a, o->stun_port);
		if ((ret = stunserver_new(loop, stun_listen, o->metrics, &r->stun)) != 0) {
			fail(err, errlen, "cannot serve STUN on %s: %s", stun_listen, strerror(-ret));
			goto out;
		}
	}
out:
	sodium_memzero(priv, sizeof(priv));
	sodium_memzero(mesh_key, sizeof(mesh_key));
	if (ret) {
		relay_instance_free(r);
		return ret;
	}
	*out = r;
	return 0;
}

void relay_instance_shutdown(struct relay_instance *r)
{
	if (r)
		relay_server_shutdown(r->srv);
}

void relay_instance_free(struct relay_instance *r)
{
	if (!r)
		return;
	stunserver_free(r->stun);
	relay_server_free(r->srv);
	SSL_CTX_free(r->tls);
	SSL_CTX_free(r->mesh_tls);
	free(r->mesh_text);
	free(r);
}

struct relay_server *relay_instance_server(const struct relay_instance *r) { return r->srv; }
uint16_t relay_instance_port(const struct relay_instance *r) { return relay_server_port(r->srv); }
uint16_t relay_instance_stun_port(const struct relay_instance *r) { return r->stun ? stunserver_port(r->stun) : 0; }
const char *relay_instance_listen(const struct relay_instance *r) { return r->listen; }
const char *relay_instance_public_key(const struct relay_instance *r) { return r->pub_b64; }
const char *relay_instance_key_text(const struct relay_instance *r) { return r->key_text; }
size_t relay_instance_mesh_peers(const struct relay_instance *r) { return r->nmesh; }
bool relay_instance_tls(const struct relay_instance *r) { return r->tls != NULL; }
