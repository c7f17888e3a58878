/* Defaults that more than one program must agree on: the knit CLI and
 * knitd on the local API socket, the operator and the docs on the address
 * pools. One definition each, here. (The version comes from CMake's
 * project(): KNIT_VERSION, a compile definition of every target linking
 * libknit.) */
#ifndef KNIT_DEFAULTS_H
#define KNIT_DEFAULTS_H

/* knitd's local API (agent/localapi.h), which the knit CLI drives. */
#define KNIT_SOCKET_DEFAULT "/var/run/knit/knitd.sock"

/* A Tailnet's address pools when its spec names none: the CGNAT range
 * (RFC 6598) and a ULA /48, as Tailscale uses them. */
#define KNIT_POOL4_DEFAULT "100.64.0.0/10"
#define KNIT_POOL6_DEFAULT "fd7a:115c:a1e0::/48"

#endif
