/*
 * A stand-in of NVML's C ABI (libnvidia-ml.so, as nvml.h publishes it) for
 * Griffin's tests on machines without an NVIDIA GPU: only the calls GPU
 * health watching makes, with the published types, return codes and
 * semantics (nvml-wrapper's init also asks the driver version). Not NVIDIA's
 * code; written from the API's documentation.
 *
 * Driven by the environment at nvmlInit_v2:
 *   GRIFFIN_NVML_STANDIN_GPUS    PCI addresses of the GPUs, comma-separated
 *                                (0000:3b:00.0,...); reported as NVML does
 *                                (00000000:3B:00.0).
 *   GRIFFIN_NVML_STANDIN_EVENTS  a file the test appends lines to; each is
 *                                one event nvmlEventSetWait_v2 delivers:
 *                                  <pci address> <xid>   a critical XID
 *                                  * <xid>               one naming no GPU
 *                                  lost                  NVML_ERROR_GPU_IS_LOST
 *                                Events of GPUs not registered in the set
 *                                are skipped, as NVML does; each GPU
 *                                registered is appended to
 *                                <events file>.registered.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int nvmlReturn_t;
enum {
	NVML_SUCCESS = 0,
	NVML_ERROR_UNINITIALIZED = 1,
	NVML_ERROR_INVALID_ARGUMENT = 2,
	NVML_ERROR_NOT_FOUND = 6,
	NVML_ERROR_INSUFFICIENT_SIZE = 7,
	NVML_ERROR_TIMEOUT = 10,
	NVML_ERROR_GPU_IS_LOST = 15,
	NVML_ERROR_UNKNOWN = 999,
};

/* nvmlEventTypeXidCriticalError and the ECC events. */
#define EVENT_SINGLE_BIT_ECC 0x1ULL
#define EVENT_DOUBLE_BIT_ECC 0x2ULL
#define EVENT_XID_CRITICAL 0x8ULL

#define MAX_GPUS 16

struct nvmlDevice_st {
	unsigned domain, bus, dev, fn;
	unsigned long long registered; /* event types, one set only */
};
typedef struct nvmlDevice_st *nvmlDevice_t;

struct nvmlEventSet_st {
	long offset; /* how far the events file was read */
};
typedef struct nvmlEventSet_st *nvmlEventSet_t;

typedef struct {
	nvmlDevice_t device;
	unsigned long long eventType;
	unsigned long long eventData;
	unsigned int gpuInstanceId;
	unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct {
	char busIdLegacy[16];
	unsigned int domain;
	unsigned int bus;
	unsigned int device;
	unsigned int pciDeviceId;
	unsigned int pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

static struct nvmlDevice_st gpus[MAX_GPUS];
static unsigned gpu_count;
static int initialised;
static char events_path[4096];

static int parse_address(const char *s, unsigned *d, unsigned *b, unsigned *v, unsigned *f)
{
	return sscanf(s, "%x:%x:%x.%x", d, b, v, f) == 4;
}

nvmlReturn_t nvmlInit_v2(void)
{
	const char *list = getenv("GRIFFIN_NVML_STANDIN_GPUS");
	const char *events = getenv("GRIFFIN_NVML_STANDIN_EVENTS");
	gpu_count = 0;
	if (list) {
		char buf[4096];
		snprintf(buf, sizeof buf, "%s", list);
		for (char *tok = strtok(buf, ","); tok && gpu_count < MAX_GPUS; tok = strtok(NULL, ",")) {
			struct nvmlDevice_st *g = &gpus[gpu_count];
			memset(g, 0, sizeof *g);
			if (!parse_address(tok, &g->domain, &g->bus, &g->dev, &g->fn))
				return NVML_ERROR_INVALID_ARGUMENT;
			gpu_count++;
		}
	}
	snprintf(events_path, sizeof events_path, "%s", events ? events : "");
	initialised = 1;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void)
{
	initialised = 0;
	return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r)
{
	return r == NVML_SUCCESS ? "Success" : "Stand-in error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
	const char *v = "565.57.01";
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	if (!version)
		return NVML_ERROR_INVALID_ARGUMENT;
	if (length < strlen(v) + 1)
		return NVML_ERROR_INSUFFICIENT_SIZE;
	strcpy(version, v);
	return NVML_SUCCESS;
}

static nvmlDevice_t find(const char *addr);

nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device)
{
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	if (!bus_id || !device)
		return NVML_ERROR_INVALID_ARGUMENT;
	*device = find(bus_id);
	return *device ? NVML_SUCCESS : NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count)
{
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	if (!count)
		return NVML_ERROR_INVALID_ARGUMENT;
	*count = gpu_count;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
	if (!initialised)
		return NVML_ERROR_UNINITIALIZED;
	if (index >= gpu_count || !device)
		return NVML_ERROR_INVALID_ARGUMENT;
	*device = &gpus[index];
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
	if (!d || !pci)
		return NVML_ERROR_INVALID_ARGUMENT;
	memset(pci, 0, sizeof *pci);
	pci->domain = d->domain;
	pci->bus = d->bus;
	pci->device = d->dev;
	pci->pciDeviceId = 0x20b010de;
	pci->pciSubSystemId = 0x145f10de;
	snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", d->domain & 0xffff, d->bus, d->dev, d->fn);
	snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", d->domain, d->bus, d->dev, d->fn);
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t d, unsigned long long *types)
{
	if (!d || !types)
		return NVML_ERROR_INVALID_ARGUMENT;
	*types = EVENT_SINGLE_BIT_ECC | EVENT_DOUBLE_BIT_ECC | EVENT_XID_CRITICAL;
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
	if (!set)
		return NVML_ERROR_INVALID_ARGUMENT;
	*set = calloc(1, sizeof **set);
	if (!*set)
		return NVML_ERROR_UNKNOWN;
	/* Events written before the set existed are not delivered. */
	FILE *f = events_path[0] ? fopen(events_path, "r") : NULL;
	if (f) {
		fseek(f, 0, SEEK_END);
		(*set)->offset = ftell(f);
		fclose(f);
	}
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set)
{
	if (!d || !set)
		return NVML_ERROR_INVALID_ARGUMENT;
	d->registered |= types;
	/* Tests wait for this before raising events. */
	if (events_path[0]) {
		char path[4200];
		snprintf(path, sizeof path, "%s.registered", events_path);
		FILE *f = fopen(path, "a");
		if (f) {
			fprintf(f, "%04x:%02x:%02x.%x\n", d->domain, d->bus, d->dev, d->fn);
			fclose(f);
		}
	}
	return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
	free(set);
	return NVML_SUCCESS;
}

static nvmlDevice_t find(const char *addr)
{
	unsigned d, b, v, f;
	if (!parse_address(addr, &d, &b, &v, &f))
		return NULL;
	for (unsigned i = 0; i < gpu_count; i++)
		if (gpus[i].domain == d && gpus[i].bus == b && gpus[i].dev == v && gpus[i].fn == f)
			return &gpus[i];
	return NULL;
}

/* The next complete line of the events file after set->offset, or 0. */
static int next_line(nvmlEventSet_t set, char *line, size_t size)
{
	FILE *f = events_path[0] ? fopen(events_path, "r") : NULL;
	int got = 0;
	if (!f)
		return 0;
	if (fseek(f, set->offset, SEEK_SET) == 0 && fgets(line, (int)size, f)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n') {
			set->offset = ftell(f);
			line[n - 1] = 0;
			got = 1;
		}
	}
	fclose(f);
	return got;
}

nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeoutms)
{
	if (!set || !data)
		return NVML_ERROR_INVALID_ARGUMENT;
	struct timespec tick = {0, 10 * 1000 * 1000};
	for (unsigned waited = 0;; waited += 10) {
		char line[256], who[128];
		unsigned long long xid;
		while (next_line(set, line, sizeof line)) {
			if (strcmp(line, "lost") == 0)
				return NVML_ERROR_GPU_IS_LOST;
			if (sscanf(line, "%127s %llu", who, &xid) != 2)
				continue;
			nvmlDevice_t d = NULL;
			if (strcmp(who, "*") != 0) {
				d = find(who);
				if (!d || !(d->registered & EVENT_XID_CRITICAL))
					continue;
			}
			memset(data, 0, sizeof *data);
			data->device = d;
			data->eventType = EVENT_XID_CRITICAL;
			data->eventData = xid;
			return NVML_SUCCESS;
		}
		if (waited >= timeoutms)
			return NVML_ERROR_TIMEOUT;
		nanosleep(&tick, NULL);
	}
}
