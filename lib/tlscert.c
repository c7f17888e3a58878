#include "tlscert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sodium.h>

static EVP_PKEY *new_key(void)
{
	return EVP_EC_gen("P-256");
}

static char *bio_text(BIO *b)
{
	char *data, *out;
	long n = BIO_get_mem_data(b, &data);

	if (n < 0)
		return NULL;
	out = malloc((size_t)n + 1);
	if (!out)
		return NULL;
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	return out;
}

static int pem_out(X509 *cert, EVP_PKEY *key, struct tlscert_pem *out)
{
	BIO *cb = BIO_new(BIO_s_secmem()), *kb = BIO_new(BIO_s_secmem());
	int err = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (!cb || !kb)
		goto out;
	if (!PEM_write_bio_X509(cb, cert) || !PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL)) {
		err = -EIO;
		goto out;
	}
	out->cert = bio_text(cb);
	out->key = bio_text(kb);
	if (!out->cert || !out->key) {
		tlscert_pem_free(out);
		goto out;
	}
	err = 0;
out:
	BIO_free(cb);
	BIO_free(kb);
	return err;
}

static X509 *parse_cert(const char *pem)
{
	BIO *b;
	X509 *x;

	if (!pem)
		return NULL;
	b = BIO_new_mem_buf(pem, -1);
	if (!b)
		return NULL;
	x = PEM_read_bio_X509(b, NULL, NULL, NULL);
	BIO_free(b);
	return x;
}

static EVP_PKEY *parse_key(const char *pem)
{
	BIO *b;
	EVP_PKEY *k;

	if (!pem)
		return NULL;
	b = BIO_new_mem_buf(pem, -1);
	if (!b)
		return NULL;
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	return k;
}

static bool add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	bool ok;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext)
		return false;
	ok = X509_add_ext(cert, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok;
}

/* A certificate with a random 128-bit serial, subject CN, validity from an
 * hour ago (clock skew) for days. */
static X509 *new_cert(const char *cn, unsigned days, EVP_PKEY *key)
{
	X509 *x = X509_new();
	X509_NAME *name;
	unsigned char serial[16];
	BIGNUM *bn = NULL;
	bool ok = false;

	if (!x)
		return NULL;
	if (RAND_bytes(serial, sizeof(serial)) != 1)
		goto out;
	serial[0] &= 0x7f; /* positive */
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto out;
	if (!X509_set_version(x, 2) || !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400) || !X509_set_pubkey(x, key))
		goto out;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0))
		goto out;
	ok = true;
out:
	BN_free(bn);
	if (!ok) {
		X509_free(x);
		x = NULL;
	}
	return x;
}

int tlscert_make_ca(const char *common_name, unsigned days, struct tlscert_pem *out)
{
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	int err = -EIO;

	memset(out, 0, sizeof(*out));
	if (!common_name || !*common_name || !days)
		return -EINVAL;
	key = new_key();
	if (!key)
		goto out;
	x = new_cert(common_name, days, key);
	if (!x || !X509_set_issuer_name(x, X509_get_subject_name(x)) ||
	    !add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE") ||
	    !add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature") ||
	    !add_ext(x, x, NID_subject_key_identifier, "hash") || !X509_sign(x, key, EVP_sha256()))
		goto out;
	err = pem_out(x, key, out);
out:
	X509_free(x);
	EVP_PKEY_free(key);
	return err;
}

static bool dns_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return false;
	}
	return true;
}

int tlscert_make_serving(const struct tlscert_pem *ca, const char *const *dns_names, size_t n, unsigned days,
			 struct tlscert_pem *out)
{
	X509 *cax = parse_cert(ca ? ca->cert : NULL), *x = NULL;
	EVP_PKEY *cakey = parse_key(ca ? ca->key : NULL), *key = NULL;
	char *san = NULL;
	size_t sanlen = 0;
	int err = -EINVAL;

	memset(out, 0, sizeof(*out));
	if (!cax || !cakey || !n || !days || X509_check_private_key(cax, cakey) != 1)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (!dns_name_ok(dns_names[i]))
			goto out;
		sanlen += strlen(dns_names[i]) + 5;
	}
	san = malloc(sanlen + 1);
	if (!san) {
		err = -ENOMEM;
		goto out;
	}
	san[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		strcat(san, i ? ",DNS:" : "DNS:");
		strcat(san, dns_names[i]);
	}
	err = -EIO;
	key = new_key();
	if (!key)
		goto out;
	x = new_cert(dns_names[0], days, key);
	if (!x || !X509_set_issuer_name(x, X509_get_subject_name(cax)) ||
	    !add_ext(x, cax, NID_basic_constraints, "critical,CA:FALSE") ||
	    !add_ext(x, cax, NID_key_usage, "critical,digitalSignature,keyEncipherment") ||
	    !add_ext(x, cax, NID_ext_key_usage, "serverAuth") ||
	    !add_ext(x, cax, NID_authority_key_identifier, "keyid:always") ||
	    !add_ext(x, cax, NID_subject_alt_name, san) || !X509_sign(x, cakey, EVP_sha256()))
		goto out;
	err = pem_out(x, key, out);
out:
	free(san);
	X509_free(x);
	X509_free(cax);
	EVP_PKEY_free(key);
	EVP_PKEY_free(cakey);
	return err;
}

int tlscert_not_after(const char *cert_pem, time_t *out)
{
	X509 *x = parse_cert(cert_pem);
	struct tm tm;
	int err = -EINVAL;

	if (x && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) {
		*out = timegm(&tm);
		err = 0;
	}
	X509_free(x);
	return err;
}

bool tlscert_usable(const char *cert_pem, const char *ca_cert_pem, const char *dns_name, time_t now,
		    time_t min_left)
{
	X509 *x = parse_cert(cert_pem), *cax = parse_cert(ca_cert_pem);
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	bool ok = false;
	time_t end;

	if (!x || !cax || !store || !ctx || tlscert_not_after(cert_pem, &end) || end - now < min_left)
		goto out;
	if (X509_check_host(x, dns_name, 0, 0, NULL) != 1)
		goto out;
	if (X509_STORE_add_cert(store, cax) != 1 || X509_STORE_CTX_init(ctx, store, x, NULL) != 1)
		goto out;
	X509_STORE_CTX_set_time(ctx, 0, now);
	ok = X509_verify_cert(ctx) == 1;
out:
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	X509_free(x);
	X509_free(cax);
	return ok;
}

void tlscert_pem_free(struct tlscert_pem *p)
{
	if (p->key) {
		sodium_memzero(p->key, strlen(p->key));
		free(p->key);
	}
	free(p->cert);
	memset(p, 0, sizeof(*p));
}
