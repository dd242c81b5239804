"""Model families. Each family is one module; its configs live in conf/model/.

Every model constructor takes ``num_classes`` plus what its data family describes about
the inputs (for images: ``in_channels`` and ``image_size``), and returns an ``nn.Module``
mapping a batch's inputs to class logits.
"""
