#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"
#include "cnierror.h"
#include "json.h"

/* Details quote untrusted input and snprintf may cut a UTF-8 sequence:
 * keep printable ASCII so the error object always serialises. */
static void ascii_only(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

void cnierror_set(struct cnierror *e, int code, const char *msg, const char *fmt, ...)
{
	va_list ap;

	e->code = code;
	snprintf(e->msg, sizeof(e->msg), "%s", msg);
	va_start(ap, fmt);
	vsnprintf(e->details, sizeof(e->details), fmt, ap);
	va_end(ap);
	ascii_only(e->msg);
	ascii_only(e->details);
}

int cnierror_dump(const struct cnierror *e, const char *cni_version, struct buf *out)
{
	struct json *o = json_new_object();
	int err;

	if (!o)
		return -ENOMEM;
	if ((err = json_object_set(o, "cniVersion", json_new_string(cni_version ? cni_version : "1.1.0"))) ||
	    (err = json_object_set(o, "code", json_new_int(e->code))) ||
	    (err = json_object_set(o, "msg", json_new_string(e->msg))) ||
	    (err = json_object_set(o, "details", json_new_string(e->details))))
		goto out;
	buf_reset(out);
	if ((err = json_dump(o, out, 0)) == 0)
		err = buf_add_byte(out, '\n');
out:
	json_free(o);
	return err;
}
