/* knit policy check FILE [--devices DEVICES.json]: validates a policy
 * file, compiles it against the devices and runs its tests, offline. */
#ifndef KNIT_CLI_POLICY_CHECK_H
#define KNIT_CLI_POLICY_CHECK_H

/* argv[0] is "check". Returns the exit status: 0 valid and every test
 * holds, 1 invalid or a test fails (messages on stderr), 2 usage. */
int policy_check_main(int argc, char **argv);

extern const char policy_check_usage[];

#endif
