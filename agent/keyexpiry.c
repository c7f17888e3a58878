#include "keyexpiry.h"

#include <stdio.h>

int64_t keyexpiry_renew_at(int64_t issued, int64_t expiry, int64_t now)
{
	int64_t life;

	if (!expiry)
		return 0;
	if (!issued || issued > expiry)
		issued = now < expiry ? now : expiry;
	life = expiry - issued;
	return expiry - life / 3;
}

uint64_t keyexpiry_delay_ms(int64_t renew_at, int64_t expiry, int64_t now, unsigned failures)
{
	int64_t s = renew_at - now;

	if (failures) {
		int64_t back = 5, left = expiry - now;

		for (unsigned i = 1; i < failures && back < 300; i++)
			back *= 2;
		if (back > 300)
			back = 300;
		if (left > 0 && back > left / 10)
			back = left / 10;
		s = back;
	}
	if (s < 1)
		s = 1;
	if (s > 3600)
		s = 3600;
	return (uint64_t)s * 1000;
}

bool keyexpiry_warn(int64_t expiry, int64_t now)
{
	return expiry && expiry - now <= KEYEXPIRY_WARN_SECONDS;
}

void keyexpiry_format_left(int64_t secs, char *out, size_t outlen)
{
	static const struct {
		int64_t secs;
		char unit;
	} units[] = { { 86400, 'd' }, { 3600, 'h' }, { 60, 'm' }, { 1, 's' } };

	if (secs < 0)
		secs = 0;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (secs < units[i].secs && units[i].secs > 1)
			continue;
		int64_t a = secs / units[i].secs, rest = secs % units[i].secs;
		if (i + 1 < sizeof(units) / sizeof(units[0]) && rest / units[i + 1].secs)
			snprintf(out, outlen, "%lld%c %lld%c", (long long)a, units[i].unit,
				 (long long)(rest / units[i + 1].secs), units[i + 1].unit);
		else
			snprintf(out, outlen, "%lld%c", (long long)a, units[i].unit);
		return;
	}
}
