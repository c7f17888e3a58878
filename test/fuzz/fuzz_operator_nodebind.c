/* The operator's checks of what the API server answers about a knitd pod
 * token (operator/nodebind.c): the same JSON as a TokenReview, as the Pod
 * it names and as the calling node's Device. Whatever it accepts names a
 * pod and a node, and a refusal always says why. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "nodebind.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_error je;
	struct json *j = json_parse((const char *)data, size, &je);
	struct nodebind_pod pod;
	char node[254], why[400];
	const char *r;

	if (!j)
		return 0;
	why[0] = '\0';
	r = nodebind_review_check(j, "system:serviceaccount:knit-system:knitd", &pod, why, sizeof(why));
	if (r ? !why[0] || pod.name[0] : !pod.name[0] || !pod.uid[0])
		abort();
	if (!r) {
		why[0] = '\0';
		r = nodebind_pod_check(j, &pod, node, sizeof(node), why, sizeof(why));
		if (r ? !why[0] || node[0] : !node[0])
			abort();
	}
	why[0] = '\0';
	if (nodebind_vouches(j, j, why, sizeof(why)) && !why[0])
		abort();
	json_free(j);
	return 0;
}
