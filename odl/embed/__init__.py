"""The embedded library: the training step as firmware that learns on the device by itself (odl.h).

library.py builds the programs (odl train's build_programs: a training step at the batch, a forward-only program at
batch 1) and renders them with the C API around them; blob.py is the state blob and flash store format on the host
side (`odl params`); project.py adds the library to an `odl compile` project (make APP=..., make run, make powercut).
"""
