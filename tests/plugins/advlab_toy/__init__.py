"""advlab-toy: a third-party plugin package that advlab's own code never imports, installed only
through its entry points (`../advlab_toy-0.1.dist-info/entry_points.txt`, found on PYTHONPATH):
the proof that the lab's shape holds (issue 21, item 6). It adds

- a task, `attributes`: multi-label attribute recognition, scored per label, where an image is
  fooled once any one of its four attribute labels flips (`advlab_toy.task`, with its report view);
- a model source for `fashion_attribute_net`, a small MLP over Fashion-MNIST (`advlab_toy.model`);
- a data source, `fashion-attributes[:train|test]`: Fashion-MNIST images with attributes derived
  from their real class labels (`advlab_toy.data`);
- an attack, `flip-step`: iterative l_inf signed-gradient steps (Kurakin et al., ICLR 2017 workshop)
  on the task's per-label loss (`advlab_toy.attack`).
"""
