/* Input to bindgen (ci/regen-xen-bindings.sh): the public headers of one
 * Xen release's tool libraries (4.17 to 4.22), laid out as libxen-dev
 * installs them. */
#include <xenctrl.h>
#include <xenguest.h>
#include <xenforeignmemory.h>
#include <xenevtchn.h>
#include <xencall.h>
#include <xentoollog.h>
#include <xenstore.h>
#include <xen/hvm/save.h>
#include <xen/io/console.h>

/* Exported by libxenctrl.so.4.NN but declared only in its private
 * xc_private.h: the getpageframeinfo3 batch query libxenguest uses. */
int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom,
                          unsigned int num, xen_pfn_t *arr);
