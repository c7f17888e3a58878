/* The pod sandbox process: holds the pod's namespaces, reaps the zombies
 * that land on it as PID 1, and exits at once on TERM or INT (as the
 * Kubernetes pause container does). Built static by scripts/image pause. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_chld(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	struct sigaction term = {.sa_handler = on_term};
	struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP};

	sigaction(SIGTERM, &term, NULL);
	sigaction(SIGINT, &term, NULL);
	sigaction(SIGCHLD, &chld, NULL);
	for (;;)
		pause();
	return 0;
}
