/* coord_flood: handshakes with fresh machine keys against the
 * coordination API, as an attacker would send them, from a range of
 * loopback source addresses. Prints "status COUNT" lines.
 *
 *   coord_flood URL ctrlkey:HEX N FIRST-SOURCE SOURCES [future]
 *
 * N handshakes in all, spread round-robin over SOURCES addresses counting
 * up from FIRST-SOURCE (e.g. 127.0.1.1); "future" stamps each a day ahead. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "control/channel.h"
#include "wg/noise.h"

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
	return size * n;
}

int main(int argc, char **argv)
{
	uint8_t server[32], machine[32], m1[CHANNEL_MSG1_LEN], ts[12];
	struct channel_initiator st;
	struct in_addr first;
	long counts[600] = { 0 };
	char url[512];
	CURL *h;
	long n, sources;
	bool future;

	if (argc < 6 || !channel_key_parse(argv[2], "ctrlkey:", server) || inet_pton(AF_INET, argv[4], &first) != 1) {
		fprintf(stderr, "usage: coord_flood URL ctrlkey:HEX N FIRST-SOURCE SOURCES [future]\n");
		return 2;
	}
	n = atol(argv[3]);
	sources = atol(argv[5]);
	future = argc > 6 && !strcmp(argv[6], "future");
	if (n < 1 || sources < 1)
		return 2;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(url, sizeof(url), "%s/knit/v1/handshake", argv[1]);
	h = curl_easy_init();
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L); /* a connection per source */
	for (long i = 0; i < n; i++) {
		struct in_addr src = { .s_addr = htonl(ntohl(first.s_addr) + (uint32_t)(i % sources)) };
		struct timespec now;
		char ip[INET_ADDRSTRLEN];
		long status = 0;

		inet_ntop(AF_INET, &src, ip, sizeof(ip));
		clock_gettime(CLOCK_REALTIME, &now);
		if (future)
			now.tv_sec += 86400;
		noise_tai64n(ts, &now);
		channel_keygen(machine);
		channel_initiate(&st, machine, server, ts, m1);
		curl_easy_setopt(h, CURLOPT_INTERFACE, ip);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, m1);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)sizeof(m1));
		if (curl_easy_perform(h) == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
		counts[status >= 0 && status < 600 ? status : 0]++;
	}
	for (int s = 0; s < 600; s++)
		if (counts[s])
			printf("%d %ld\n", s, counts[s]);
	curl_easy_cleanup(h);
	curl_global_cleanup();
	return 0;
}
