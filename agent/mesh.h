/* knitd's mesh mode (`knitd run`): one node identity joined to a knit
 * tailnet. It keeps its keys in the state file, registers through the
 * coordination server, follows the map stream, and applies each netmap to
 * the WireGuard engine (peers, allowed IPs, endpoints) and to the TUN
 * device (addresses, routes). When the control plane is away it keeps
 * forwarding on the last netmap, also across its own restarts. The knit
 * CLI drives it through the local API. */
#ifndef KNIT_AGENT_MESH_H
#define KNIT_AGENT_MESH_H

int mesh_main(int argc, char **argv);

#endif
