/* mqtt.h — the server's MQTT clients (telemetry ingest, desired-state
 * publisher) made the same way from the config: broker address, user name
 * and password file. */
#ifndef MF_SERVER_MQTT_H
#define MF_SERVER_MQTT_H

#include <stdbool.h>

#include "common/err.h"
#include "server/config.h"

struct mosquitto;

/* A client (mosquitto_lib_init done by the caller) with id `id` (clean
 * session when `clean`), user data obj and the configured credentials; *host
 * (caller frees) and *port from cfg->mqtt_broker. Errors: MF_ERR_SCHEMA
 * naming the config key, MF_ERR_IO. */
MF_MUST_CHECK enum mf_err mf_server_mqtt_new(const struct mf_server_config *c, const char *id,
                                             bool clean, void *obj, struct mosquitto **out,
                                             char **host, int *port, struct mf_diag *diag);

#endif
