#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "cniresult.h"
#include "json.h"
#include "knitdapi.h"

enum reach { REACH_OK, REACH_ABSENT, REACH_FAILED };

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to be ready for events until deadline; false on timeout. */
static bool wait_fd(int fd, short events, long deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	long left;
	int n;

	while ((left = deadline - now_ms()) > 0) {
		n = poll(&p, 1, (int)left);
		if (n > 0)
			return true;
		if (n < 0 && errno != EINTR)
			return true; /* let the read/write report it */
	}
	return false;
}

/* "HTTP/1.x NNN ...\r\n headers \r\n\r\n body": the status and the body
 * (cut at Content-Length when there is one). false when it is not that. */
static bool response_parse(const char *r, size_t len, long *status, const char **body, size_t *body_len)
{
	const char *end = memmem(r, len, "\r\n\r\n", 4), *h;
	size_t hlen;

	if (!end || len < 12 || strncmp(r, "HTTP/1.", 7) != 0 || r[8] != ' ' || r[9] < '1' || r[9] > '5' ||
	    r[10] < '0' || r[10] > '9' || r[11] < '0' || r[11] > '9')
		return false;
	*status = (r[9] - '0') * 100 + (r[10] - '0') * 10 + (r[11] - '0');
	*body = end + 4;
	*body_len = len - (size_t)(*body - r);
	hlen = (size_t)(end - r);
	for (h = r; h && h < end; h = memmem(h, hlen - (size_t)(h - r), "\r\n", 2), h = h ? h + 2 : NULL) {
		if (strncasecmp(h, "Transfer-Encoding:", 18) == 0)
			return false; /* an HTTP/1.0 request is never answered chunked */
		if (strncasecmp(h, "Content-Length:", 15) == 0) {
			char *e;
			unsigned long long n = strtoull(h + 15, &e, 10);

			if (n > *body_len)
				return false;
			*body_len = (size_t)n;
		}
	}
	return true;
}

/* One request over the unix socket, HTTP/1.0 with Connection: close, so
 * the answer ends where the connection does. A libcurl-free client keeps
 * knit-cni's start-up (paid by every pod, annotated or not) to the few
 * libraries it needs: libcurl alone brings in some thirty.
 *
 * REACH_OK with *status and *out (the body parsed; NULL when not JSON);
 * otherwise e says why knitd could not be asked. */
static enum reach request(const struct knitdapi *api, const char *method, const char *path,
			  const struct json *body, long timeout_ms, long *status, struct json **out,
			  struct cnierror *e)
{
	struct buf resp = BUF_INIT(KNITDAPI_MAX_RESPONSE + 16384), req = BUF_INIT(1 << 20),
		   jb = BUF_INIT(1 << 20);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = api->connect_timeout_ms / 1000,
			      .tv_usec = (api->connect_timeout_ms % 1000) * 1000 };
	long deadline = now_ms() + timeout_ms;
	enum reach ret = REACH_FAILED;
	const char *b;
	size_t blen, off = 0;
	struct stat sb;
	int fd = -1, err;

	*out = NULL;
	*status = 0;
	/* The fast path for a node whose knitd is not there at all. */
	if (stat(api->socket, &sb) < 0 && errno == ENOENT) {
		cnierror_set(e, CNI_ERR_TRY_AGAIN, "knitd is not running",
			     "no knitd socket at %s: the knit DaemonSet pod on this node must be Running "
			     "(kubectl -n knit-system get pods -o wide); the runtime retries",
			     api->socket);
		ret = REACH_ABSENT;
		goto out;
	}
	if ((body && json_dump(body, &jb, 0)) ||
	    buf_addf(&req, "%s %s HTTP/1.0\r\nHost: local-knitd\r\nConnection: close\r\n", method, path) ||
	    (body && buf_addf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n", jb.len)) ||
	    buf_add_str(&req, "\r\n") || (body && buf_add(&req, jb.data, jb.len))) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni could not build its request to knitd");
		goto out;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", api->socket);
	/* connect(2) on a unix socket waits SO_SNDTIMEO when knitd's backlog is full. */
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0) {
		cnierror_set(e, CNI_ERR_IO, "cannot make a socket", "socket: %s", strerror(errno));
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = errno;
		if (err == ECONNREFUSED || err == ENOENT || err == ENOTSOCK) {
			cnierror_set(e, CNI_ERR_TRY_AGAIN, "knitd is not running",
				     "knitd does not accept connections on %s (%s): the knit DaemonSet pod on "
				     "this node must be Running; the runtime retries",
				     api->socket, strerror(err));
			ret = REACH_ABSENT;
		} else {
			cnierror_set(e, CNI_ERR_TRY_AGAIN, "cannot talk to knitd", "connecting to %s: %s%s",
				     api->socket, strerror(err),
				     err == EAGAIN || err == EINPROGRESS ? " (knitd is too busy to accept)" : "");
		}
		goto out;
	}
	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
		cnierror_set(e, CNI_ERR_IO, "cannot use the socket", "fcntl: %s", strerror(errno));
		goto out;
	}
	while (off < req.len) {
		ssize_t n = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL);

		if (n >= 0) {
			off += (size_t)n;
		} else if (errno == EAGAIN || errno == EINTR) {
			if (!wait_fd(fd, POLLOUT, deadline))
				goto timeout;
		} else {
			cnierror_set(e, CNI_ERR_TRY_AGAIN, "cannot talk to knitd", "%s %s on %s: %s", method, path,
				     api->socket, strerror(errno));
			goto out;
		}
	}
	for (;;) {
		int rerr = 0;
		uint8_t *p = buf_reserve(&resp, 16384, &rerr);
		ssize_t n;

		if (!p) {
			cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
				     "%s %s: the answer is larger than %zu bytes", method, path, resp.max);
			goto out;
		}
		n = recv(fd, p, 16384, 0);
		if (n > 0) {
			buf_commit(&resp, (size_t)n);
		} else if (n == 0) {
			break;
		} else if (errno == EAGAIN || errno == EINTR) {
			if (!wait_fd(fd, POLLIN, deadline))
				goto timeout;
		} else {
			cnierror_set(e, CNI_ERR_TRY_AGAIN, "cannot talk to knitd", "%s %s on %s: %s", method, path,
				     api->socket, strerror(errno));
			goto out;
		}
	}
	if (!response_parse(buf_str(&resp), resp.len, status, &b, &blen)) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "%s %s on %s: not an HTTP/1.x answer with a plain body: install matching knitd and "
			     "knit-cni versions",
			     method, path, api->socket);
		goto out;
	}
	*out = json_parse_max(b, blen, KNITDAPI_MAX_RESPONSE, NULL);
	ret = REACH_OK;
	goto out;
timeout:
	cnierror_set(e, CNI_ERR_TRY_AGAIN, "knitd did not answer in time",
		     "%s %s on %s took longer than %ld ms: knitd is busy or stuck (its log says which); "
		     "the runtime retries",
		     method, path, api->socket, timeout_ms);
out:
	if (fd >= 0)
		close(fd);
	buf_free(&jb);
	buf_free(&req);
	buf_free(&resp);
	return ret;
}

/* knitd's errors: {"error":"message","code":"Reason"} as the rest of the
 * local API; {"error":{"code","message"}} is read too. */
int knitdapi_error(long http_status, const struct json *body, const char *what, struct cnierror *e)
{
	const struct json *err = json_get(body, "error");
	const char *code = json_str(json_is_object(err) ? json_get(err, "code") : json_get(body, "code"));
	const char *msg = json_str(json_is_object(err) ? json_get(err, "message") : err);
	int cni;
	const char *todo;

	code = code ? code : "";
	msg = msg ? msg : "(no message)";
	if (strcmp(code, "TagNotPermitted") == 0) {
		cni = KNIT_ERR_TAG_REFUSED;
		todo = "the tailnet policy's tagOwners must allow this pod's namespace/ServiceAccount to claim "
		       "the tags in its knit.dev/tags annotation";
	} else if (strcmp(code, "PodNotAuthorized") == 0 || strcmp(code, "PodNotFound") == 0 ||
		   http_status == 403) {
		cni = KNIT_ERR_POD_REFUSED;
		todo = "the operator binds identities only to existing pods scheduled on the asking node";
	} else if (strcmp(code, "Conflict") == 0 || strcmp(code, "IdentityConflict") == 0 ||
		   http_status == 409) {
		cni = KNIT_ERR_CONFLICT;
		todo = "another pod holds this attachment, or the interface name is taken in the pod: "
		       "check the plugin's ifName";
	} else if (http_status == 503 || http_status == 504 || strcmp(code, "NotReady") == 0 ||
		   strcmp(code, "NeedsLogin") == 0 || strcmp(code, "ControlUnreachable") == 0) {
		cni = CNI_ERR_TRY_AGAIN;
		todo = "knitd is not in the tailnet yet (knit status on the node says why); the runtime retries";
	} else if (http_status == 400) {
		cni = KNIT_ERR_KNITD;
		todo = "knitd and knit-cni disagree on the local API: install matching versions";
	} else {
		cni = KNIT_ERR_KNITD;
		todo = "knitd's log on this node says more";
	}
	cnierror_set(e, cni, "knitd refused the request", "%s: knitd answered HTTP %ld %s: %s; %s", what,
		     http_status, code[0] ? code : "(no code)", msg, todo);
	return cni;
}

static char *dup_str(const struct json *o, const char *key)
{
	const char *s = json_str(json_get(o, key));

	return s ? strdup(s) : NULL;
}

static bool prefixes_parse(const struct json *a, const char *key, char ***out, size_t *n, char *why,
			   size_t whylen)
{
	struct cniresult_prefix p;

	*out = NULL;
	*n = 0;
	if (!json_is_array(a)) {
		errbuf_printf(why, whylen, "\"%s\" is not an array", key);
		return false;
	}
	if (json_array_len(a) == 0)
		return true;
	if (json_array_len(a) > 64 || !(*out = calloc(json_array_len(a), sizeof(**out)))) {
		errbuf_printf(why, whylen, "\"%s\" has too many entries", key);
		return false;
	}
	for (size_t i = 0; i < json_array_len(a); i++) {
		const char *s = json_str(json_array_at(a, i));

		if (!cniresult_prefix_parse(s, &p)) {
			errbuf_printf(why, whylen, "%s[%zu] is not a prefix in CIDR notation", key, i);
			return false;
		}
		if (!((*out)[i] = strdup(s))) {
			errbuf_printf(why, whylen, "out of memory");
			return false;
		}
		++*n;
	}
	return true;
}

bool knitdapi_identity_parse(const struct json *o, struct knitdapi_identity *id, char *why, size_t whylen)
{
	memset(id, 0, sizeof(*id));
	if (!json_is_object(o)) {
		errbuf_printf(why, whylen, "an identity is not an object");
		return false;
	}
	id->containerid = dup_str(o, "containerID");
	id->ifname = dup_str(o, "ifName");
	id->network = dup_str(o, "network");
	id->interface = dup_str(o, "interface");
	id->device_name = dup_str(o, "deviceName");
	if (!id->interface) {
		errbuf_printf(why, whylen, "\"interface\" is missing");
		goto fail;
	}
	if (!prefixes_parse(json_get(o, "addresses"), "addresses", &id->addresses, &id->naddresses, why, whylen) ||
	    !prefixes_parse(json_get(o, "routes"), "routes", &id->routes, &id->nroutes, why, whylen))
		goto fail;
	if (id->naddresses == 0) {
		errbuf_printf(why, whylen, "\"addresses\" is empty");
		goto fail;
	}
	return true;
fail:
	knitdapi_identity_free(id);
	return false;
}

void knitdapi_identity_free(struct knitdapi_identity *id)
{
	if (!id)
		return;
	free(id->containerid);
	free(id->ifname);
	free(id->network);
	free(id->interface);
	free(id->device_name);
	for (size_t i = 0; id->addresses && i < id->naddresses; i++)
		free(id->addresses[i]);
	free(id->addresses);
	for (size_t i = 0; id->routes && i < id->nroutes; i++)
		free(id->routes[i]);
	free(id->routes);
	memset(id, 0, sizeof(*id));
}

static int put_str(struct json *o, const char *key, const char *v)
{
	return v ? json_object_set(o, key, json_new_string(v)) : 0;
}

int knitdapi_attach(const struct knitdapi *api, const struct knitdapi_attach_req *r, long timeout_ms,
		    struct knitdapi_identity *out, bool *unsure, struct cnierror *e)
{
	struct json *body = json_new_object(), *tags = json_new_array(), *resp = NULL;
	char why[256];
	enum reach reach;
	long status;
	int ret;

	memset(out, 0, sizeof(*out));
	*unsure = false;
	if (!body || !tags || json_object_set(body, "tags", tags))
		goto nomem;
	for (size_t i = 0; i < r->ntags; i++)
		if (json_array_append(tags, json_new_string(r->tags[i])))
			goto nomem;
	if (put_str(body, "containerID", r->containerid) || put_str(body, "ifName", r->ifname) ||
	    put_str(body, "netns", r->netns) || put_str(body, "network", r->network) ||
	    put_str(body, "podNamespace", r->pod_namespace) || put_str(body, "podName", r->pod_name) ||
	    put_str(body, "podUID", r->pod_uid) || put_str(body, "hostname", r->hostname))
		goto nomem;
	tags = NULL;
	if ((reach = request(api, "POST", "/localapi/v1/identities", body, timeout_ms, &status, &resp, e)) !=
	    REACH_OK) {
		*unsure = reach == REACH_FAILED;
		ret = e->code;
		goto out;
	}
	if (status != 200 || !resp || json_get(resp, "error")) {
		ret = knitdapi_error(status, resp, "attaching the pod's identity", e);
		goto out;
	}
	/* From here knitd made the identity: a caller that cannot use it
	 * rolls it back. */
	*unsure = true;
	if (!knitdapi_identity_parse(resp, out, why, sizeof(why))) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "POST /localapi/v1/identities: %s; install matching knitd and knit-cni versions", why);
		ret = e->code;
		goto out;
	}
	if (strcmp(out->interface, r->ifname) != 0) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "knitd made interface \"%.32s\", knit-cni asked for \"%s\"", out->interface, r->ifname);
		knitdapi_identity_free(out);
		ret = e->code;
		goto out;
	}
	*unsure = false;
	ret = 0;
	goto out;
nomem:
	json_free(tags);
	cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
	ret = e->code;
out:
	json_free(body);
	json_free(resp);
	return ret;
}

/* A path segment: RFC 3986 unreserved characters as they are, the rest
 * percent-encoded. Caller frees. */
static char *path_escape(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(n * 3 + 1), *o = out;

	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}

int knitdapi_detach(const struct knitdapi *api, const char *containerid, const char *ifname, long timeout_ms,
		    bool *absent, struct cnierror *e)
{
	char path[1200];
	struct json *resp = NULL;
	char *cid = NULL, *ifn = NULL;
	enum reach reach;
	long status;
	int ret;

	*absent = false;
	cid = path_escape(containerid);
	ifn = path_escape(ifname);
	if (!cid || !ifn) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
		ret = e->code;
		goto out;
	}
	snprintf(path, sizeof(path), "/localapi/v1/identities/%s/%s", cid, ifn);
	reach = request(api, "DELETE", path, NULL, timeout_ms, &status, &resp, e);
	if (reach == REACH_ABSENT) {
		*absent = true;
		ret = 0;
	} else if (reach != REACH_OK) {
		ret = e->code;
	} else if (status == 200 || status == 404) {
		ret = 0;
	} else {
		ret = knitdapi_error(status, resp, "detaching the pod's identity", e);
	}
out:
	free(cid);
	free(ifn);
	json_free(resp);
	return ret;
}

int knitdapi_list(const struct knitdapi *api, long timeout_ms, struct knitdapi_identity **ids, size_t *n,
		  bool *absent, struct cnierror *e)
{
	struct json *resp = NULL;
	const struct json *arr;
	enum reach reach;
	char why[256];
	long status;
	int ret = 0;

	*ids = NULL;
	*n = 0;
	*absent = false;
	reach = request(api, "GET", "/localapi/v1/identities", NULL, timeout_ms, &status, &resp, e);
	if (reach == REACH_ABSENT)
		*absent = true;
	if (reach != REACH_OK) {
		ret = e->code;
		goto out;
	}
	if (status != 200 || !resp || json_get(resp, "error")) {
		ret = knitdapi_error(status, resp, "listing pod identities", e);
		goto out;
	}
	arr = json_get(resp, "identities");
	if (!json_is_array(arr)) {
		cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
			     "GET /localapi/v1/identities: \"identities\" is not an array");
		ret = e->code;
		goto out;
	}
	if (json_array_len(arr) && !(*ids = calloc(json_array_len(arr), sizeof(**ids)))) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
		ret = e->code;
		goto out;
	}
	for (size_t i = 0; i < json_array_len(arr); i++) {
		bool ok = knitdapi_identity_parse(json_array_at(arr, i), &(*ids)[*n], why, sizeof(why));

		if (ok && (!(*ids)[*n].containerid || !(*ids)[*n].ifname)) {
			ok = false;
			snprintf(why, sizeof(why), "containerID or ifName missing");
		}
		if (!ok) {
			knitdapi_identity_free(&(*ids)[*n]);
			cnierror_set(e, KNIT_ERR_PROTOCOL, "knitd's answer makes no sense",
				     "GET /localapi/v1/identities: identities[%zu]: %s", i, why);
			ret = e->code;
			goto out;
		}
		++*n;
	}
out:
	if (ret) {
		for (size_t i = 0; i < *n; i++)
			knitdapi_identity_free(&(*ids)[i]);
		free(*ids);
		*ids = NULL;
		*n = 0;
	}
	json_free(resp);
	return ret;
}

int knitdapi_status(const struct knitdapi *api, long timeout_ms, struct json **st, bool *absent,
		    struct cnierror *e)
{
	enum reach reach;
	long status;

	*absent = false;
	reach = request(api, "GET", "/localapi/v1/status", NULL, timeout_ms, &status, st, e);
	if (reach == REACH_ABSENT)
		*absent = true;
	if (reach != REACH_OK)
		return e->code;
	if (status != 200 || !*st || json_get(*st, "error")) {
		int ret = knitdapi_error(status, *st, "asking knitd's status", e);

		json_free(*st);
		*st = NULL;
		return ret;
	}
	return 0;
}
