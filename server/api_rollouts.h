/* api_rollouts.h — the /api/v1/rollouts handlers (docs/api.md "Rollouts"),
 * routed by api.c's table: create a rollout from a plan, list and read them
 * with their per-class counts and stage evidence, list a rollout's devices,
 * and the four transitions a person may make (pause, resume, abort, promote).
 * Every write is one transaction that also writes its audit_log row. The
 * rollout controller (server/controller.c) moves rollouts on by itself; these
 * handlers take the row lock it takes, so the two never interleave. */
#ifndef MF_SERVER_API_ROLLOUTS_H
#define MF_SERVER_API_ROLLOUTS_H

#include <jansson.h>

#include "common/err.h"
#include "server/http.h"

void mf_api_rollout_create(struct mf_http_req *req);  /* POST /rollouts */
void mf_api_rollouts(struct mf_http_req *req);        /* GET /rollouts */
void mf_api_rollout(struct mf_http_req *req);         /* GET /rollouts/{id} */
void mf_api_rollout_devices(struct mf_http_req *req); /* GET /rollouts/{id}/devices */
void mf_api_rollout_pause(struct mf_http_req *req);   /* POST /rollouts/{id}/pause */
void mf_api_rollout_resume(struct mf_http_req *req);  /* POST /rollouts/{id}/resume */
void mf_api_rollout_abort(struct mf_http_req *req);   /* POST /rollouts/{id}/abort */
void mf_api_rollout_promote(struct mf_http_req *req); /* POST /rollouts/{id}/promote */

#endif
