/* Non-blocking name lookups (lookup.h). */
#include "net/lookup.h"

#include <stddef.h>

int lookup_start(struct lookup *l, const char *host, const char *service, int socktype)
{
	struct gaicb *list[1] = { &l->gai };
	int r;

	lookup_stop(l);
	l->hints = (struct addrinfo){ .ai_socktype = socktype };
	l->gai = (struct gaicb){ .ar_name = host, .ar_service = service, .ar_request = &l->hints };
	r = getaddrinfo_a(GAI_NOWAIT, list, 1, NULL);
	l->live = r == 0;
	return r;
}

int lookup_result(struct lookup *l, struct addrinfo **res)
{
	int r;

	*res = NULL;
	if (!l->live)
		return EAI_SYSTEM;
	r = gai_error(&l->gai);
	if (r == EAI_INPROGRESS)
		return r;
	l->live = false;
	if (r == 0) {
		*res = l->gai.ar_result;
		l->gai.ar_result = NULL;
	}
	return r;
}

void lookup_stop(struct lookup *l)
{
	if (!l->live)
		return;
	if (gai_cancel(&l->gai) == EAI_NOTCANCELED) {
		const struct gaicb *list[1] = { &l->gai };
		while (gai_error(&l->gai) == EAI_INPROGRESS)
			gai_suspend(list, 1, NULL);
	}
	if (gai_error(&l->gai) == 0 && l->gai.ar_result)
		freeaddrinfo(l->gai.ar_result);
	l->gai.ar_result = NULL;
	l->live = false;
}
