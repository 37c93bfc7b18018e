/* api.h — the /api/v1 route table (docs/api.md, docs/openapi.yaml). */
#ifndef MF_SERVER_API_H
#define MF_SERVER_API_H

#include <stddef.h>

#include "server/http.h"

extern const struct mf_route mf_api_routes[];
extern const size_t mf_api_routes_count;

#endif
