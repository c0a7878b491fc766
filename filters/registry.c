/* The filters petrel knows, looked up by the type URL of their typed_config. */
#include <string.h>

#include "filters/filter.h"

extern const pt_network_filter_ops_t pt_tcp_proxy_filter;

static const pt_network_filter_ops_t *const network_filters[] = {
    &pt_tcp_proxy_filter,
    NULL,
};

const pt_network_filter_ops_t *pt_network_filter_find(const char *type_url)
{
    for (int i = 0; network_filters[i] != NULL; i++)
        if (strcmp(network_filters[i]->type_url, type_url) == 0)
            return network_filters[i];
    return NULL;
}
