/* mqtt.c — the server's MQTT clients (see mqtt.h). */
#include "server/mqtt.h"

#include <mosquitto.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"

enum mf_err mf_server_mqtt_new(const struct mf_server_config *c, const char *id, bool clean,
                               void *obj, struct mosquitto **out, char **host, int *port,
                               struct mf_diag *diag)
{
    char *password = NULL;
    enum mf_err rc;
    int mrc = MOSQ_ERR_SUCCESS;

    *out = NULL;
    *host = NULL;
    if (mf_split_hostport(c->mqtt_broker, host, port) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "mqtt_broker", "\"%s\" is not host:port",
                           c->mqtt_broker);
    if ((rc = mf_cfg_secret(c->mqtt_password_file, &password, diag)) != MF_OK)
        goto fail;
    struct mosquitto *m = mosquitto_new(id, clean, obj);
    if (!m) {
        rc = mf_diag_set(diag, MF_ERR_IO, "mqtt", "mosquitto_new failed");
        goto fail;
    }
    if (*c->mqtt_username)
        mrc = mosquitto_username_pw_set(m, c->mqtt_username, password);
    if (mrc != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(m);
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, "mqtt_username", "%s", mosquitto_strerror(mrc));
        goto fail;
    }
    *out = m;
fail:
    if (password) {
        sodium_memzero(password, strlen(password));
        free(password);
    }
    if (rc != MF_OK) {
        free(*host);
        *host = NULL;
    }
    return rc;
}
