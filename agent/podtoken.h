/* The knitd pod's projected ServiceAccount token (docs/cni.md, "Binding a
 * node Device to its Node"): the kubelet writes it to a file and rotates
 * it, so it is read again for every register call. */
#ifndef KNIT_AGENT_PODTOKEN_H
#define KNIT_AGENT_PODTOKEN_H

/* Reads path (at most MESSAGES_POD_TOKEN_MAX bytes, trailing whitespace
 * dropped) into *out (caller frees with podtoken_free). 0, or a negative
 * errno: -ENOENT, -EFBIG (too large), -EINVAL (empty), -ENOMEM. */
int podtoken_read(const char *path, char **out);
/* Wipes and frees a token from podtoken_read (NULL: nothing). */
void podtoken_free(char *token);

#endif
