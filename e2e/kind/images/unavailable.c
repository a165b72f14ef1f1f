/*
 * The entrypoint of a stand-in image: an image that kind's node-image build insists on
 * preloading but that cannot be built on this machine (its source is not served by any
 * registry reachable here) and that a weft cluster never runs. It says so and fails,
 * so a pod that does start it shows why in its log instead of doing something else.
 * UNAVAILABLE is set at compile time (-DUNAVAILABLE='"..."').
 */
#include <stdio.h>

#ifndef UNAVAILABLE
#define UNAVAILABLE "this image is a stand-in"
#endif

int main(void)
{
    fprintf(stderr, "%s\n", UNAVAILABLE);
    return 1;
}
