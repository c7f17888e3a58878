/* A small certificate authority for a server that must provision its own
 * TLS (knit-operator's admission webhooks): a self-signed CA and serving
 * certificates it signs, ECDSA P-256, PEM in and out (OpenSSL's libcrypto).
 * Private keys come back in PEM buffers the caller wipes and frees
 * (tlscert_pem_free). */
#ifndef KNIT_TLSCERT_H
#define KNIT_TLSCERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct tlscert_pem {
	char *cert; /* NUL-terminated PEM */
	char *key; /* NUL-terminated PEM (PKCS#8); NULL where not asked for */
};

/* A self-signed CA certificate (basicConstraints CA:TRUE, keyCertSign)
 * valid for days from now. 0 or a negative errno. */
int tlscert_make_ca(const char *common_name, unsigned days, struct tlscert_pem *out);
/* A serving certificate for dns_names (the first is also the CN), signed
 * by ca (cert and key), valid for days. 0, -EINVAL for a bad CA or name,
 * -ENOMEM, -EIO. */
int tlscert_make_serving(const struct tlscert_pem *ca, const char *const *dns_names, size_t n, unsigned days,
			 struct tlscert_pem *out);
/* The certificate's notAfter; -EINVAL if it does not parse. */
int tlscert_not_after(const char *cert_pem, time_t *out);
/* True if cert is signed by ca_cert, names dns_name, and is valid at now
 * for at least min_left seconds more. */
bool tlscert_usable(const char *cert_pem, const char *ca_cert_pem, const char *dns_name, time_t now,
		    time_t min_left);
/* Wipes and frees both buffers. */
void tlscert_pem_free(struct tlscert_pem *p);

#endif
