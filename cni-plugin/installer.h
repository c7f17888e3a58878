/* knit-cni install: what the knitd DaemonSet's init container runs on each
 * node. Copies the plugin into the CNI bin dir and chains it at the end of
 * the node's primary network configuration (the lexicographically first
 * *.conf, *.conflist or *.json in the conf dir, the one the runtime uses),
 * keeping the original as <file>.knit-orig; --uninstall puts it back.
 * Both are idempotent, and every file is replaced atomically (rename) so
 * the runtime never reads half a file. */
#ifndef KNIT_CNI_INSTALLER_H
#define KNIT_CNI_INSTALLER_H

#include <stdbool.h>
#include <stddef.h>

struct json;

#define INSTALLER_BACKUP_SUFFIX ".knit-orig"
#define INSTALLER_PLUGIN_TYPE "knit-cni"

struct installer_opts {
	const char *conf_dir; /* /etc/cni/net.d */
	const char *bin_dir; /* /opt/cni/bin */
	const char *source; /* the binary to copy; NULL: /proc/self/exe */
	const char *mode; /* NULL: knit-cni's default (identity) */
	const char *socket; /* NULL: knit-cni's default */
};

/* knit-cni's conflist entry: type, the pod-annotations capability, and mode
 * and socket when given. NULL on ENOMEM. */
struct json *installer_entry_new(const char *mode, const char *socket);
/* A conflist with entry last in its plugins (any earlier knit-cni entry
 * removed). conf is a conflist (it has "plugins") or a single plugin
 * configuration, which becomes a one-plugin list. NULL with why when conf
 * cannot carry a chained plugin. */
struct json *installer_conflist_insert(const struct json *conf, const struct json *entry, char *why, size_t whylen);
/* conf without knit-cni entries; *changed says whether it had any. */
struct json *installer_conflist_remove(const struct json *conf, bool *changed);
/* The runtime's pick in dir, malloc'd into *name (a file name); -ENOENT when
 * there is none. */
int installer_primary(const char *dir, char **name);

int installer_install(const struct installer_opts *o, char *why, size_t whylen);
int installer_uninstall(const struct installer_opts *o, char *why, size_t whylen);

#endif
